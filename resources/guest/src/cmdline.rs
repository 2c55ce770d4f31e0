//! Command-line options: whitespace-separated words; the guest reads `guest.KEY=VALUE`
//! words (GUEST-ABI.md). Other words (e.g. ones meant for a Linux kernel) are ignored. If a
//! key appears more than once the last one wins, as in Linux.

/// The kernel command line.
#[derive(Clone, Copy)]
pub struct Cmdline {
    raw: &'static [u8],
}

impl Cmdline {
    pub fn new(raw: &'static [u8]) -> Self {
        Self { raw }
    }

    /// The whole command line, as passed by the VMM.
    pub fn raw(&self) -> &'static [u8] {
        self.raw
    }

    /// Value of the last `key=value` word for `key` (e.g. `"guest.hz"`); a bare `key` word
    /// gives an empty value.
    pub fn get(&self, key: &str) -> Option<&'static [u8]> {
        let key = key.as_bytes();
        self.raw
            .split(u8::is_ascii_whitespace)
            .rev()
            .find_map(|word| match word.strip_prefix(key)? {
                [] => Some(&[][..]),
                [b'=', value @ ..] => Some(value),
                _ => None, // a longer key with the same prefix
            })
    }
}

/// Parses an unsigned integer: decimal, or hexadecimal with a `0x` prefix; `_` may separate
/// digits (`10_000_000`). `None` if empty, malformed or out of range.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s {
        [b'0', b'x' | b'X', hex @ ..] => (hex, 16),
        _ => (s, 10),
    };
    let mut value: u64 = 0;
    let mut any = false;
    for &c in digits {
        if c == b'_' {
            continue;
        }
        let d = (c as char).to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(d))?;
        any = true;
    }
    any.then_some(value)
}
