//! Command-line words of the `kv` mode.
//!
//! - `virtio_mmio.device=SIZE@ADDR:IRQ[:ID]`, one word per device, in the syntax of Linux's
//!   virtio-mmio driver (drivers/virtio/virtio_mmio.c, "virtio_mmio.device="): SIZE is a
//!   number with an optional K/M/G suffix (memparse), ADDR a number (`0x` hex or decimal),
//!   IRQ a decimal interrupt line, the optional ID (Linux's platform device id) is ignored.
//! - `guest.ip=A.B.C.D/NN` (the guest's address and prefix length), `guest.gw=A.B.C.D`.

use alloc::vec::Vec;

/// One `virtio_mmio.device=` word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevice {
    /// Size of the register window in bytes.
    pub size: u64,
    /// Guest-physical base address.
    pub addr: u64,
    /// Interrupt line (0-15 on the PIC).
    pub irq: u32,
}

/// The key of the device words.
pub const VIRTIO_MMIO_KEY: &[u8] = b"virtio_mmio.device=";

/// Parses an unsigned number: decimal, or hexadecimal with `0x`. `None` if empty, malformed
/// or out of range.
pub fn parse_number(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s {
        [b'0', b'x' | b'X', hex @ ..] => (hex, 16),
        _ => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &c| {
        let d = (c as char).to_digit(radix)?;
        acc.checked_mul(u64::from(radix))?.checked_add(u64::from(d))
    })
}

/// A size with an optional K/M/G suffix (binary multiples, as Linux's memparse).
pub fn parse_size(s: &[u8]) -> Option<u64> {
    let (num, shift) = match s.last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    // A hex number ending in a digit "b"... is not a suffix question: K/M/G are no hex digits.
    parse_number(num)?.checked_mul(1u64 << shift)
}

/// Parses the value of one `virtio_mmio.device=` word (`SIZE@ADDR:IRQ[:ID]`).
pub fn parse_mmio_device(value: &[u8]) -> Option<MmioDevice> {
    let at = value.iter().position(|&c| c == b'@')?;
    let (size, rest) = (&value[..at], &value[at + 1..]);
    let mut parts = rest.split(|&c| c == b':');
    let addr = parse_number(parts.next()?)?;
    let irq = parse_number(parts.next()?)?;
    if let Some(id) = parts.next() {
        parse_number(id)?;
    }
    if parts.next().is_some() {
        return None;
    }
    let size = parse_size(size)?;
    if size == 0 || addr.checked_add(size).is_none() {
        return None;
    }
    Some(MmioDevice {
        size,
        addr,
        irq: u32::try_from(irq).ok()?,
    })
}

/// All `virtio_mmio.device=` words of a command line, in order. A malformed word is returned
/// as `Err(word)` so that the caller can report it.
pub fn mmio_devices(cmdline: &[u8]) -> Vec<Result<MmioDevice, &[u8]>> {
    cmdline
        .split(u8::is_ascii_whitespace)
        .filter_map(|word| word.strip_prefix(VIRTIO_MMIO_KEY).map(|v| (word, v)))
        .map(|(word, value)| parse_mmio_device(value).ok_or(word))
        .collect()
}

/// A dotted-quad IPv4 address.
pub fn parse_ipv4(s: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split(|&c| c == b'.');
    for byte in out.iter_mut() {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *byte = u8::try_from(parse_number(part)?).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// `A.B.C.D/NN` with a prefix length of 1-32.
pub fn parse_ipv4_cidr(s: &[u8]) -> Option<([u8; 4], u8)> {
    let slash = s.iter().position(|&c| c == b'/')?;
    let addr = parse_ipv4(&s[..slash])?;
    let len = &s[slash + 1..];
    if len.is_empty() || len.len() > 2 || !len.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let prefix = u8::try_from(parse_number(len)?).ok()?;
    (1..=32).contains(&prefix).then_some((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_numbers() {
        assert_eq!(parse_size(b"4K"), Some(4096));
        assert_eq!(parse_size(b"4k"), Some(4096));
        assert_eq!(parse_size(b"1M"), Some(1 << 20));
        assert_eq!(parse_size(b"0x200"), Some(512));
        assert_eq!(parse_size(b"512"), Some(512));
        assert_eq!(parse_size(b"K"), None);
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_number(b"0xd0000000"), Some(0xd000_0000));
        assert_eq!(parse_number(b"0x"), None);
        assert_eq!(parse_number(b"12a"), None);
    }

    #[test]
    fn mmio_device_words() {
        assert_eq!(
            parse_mmio_device(b"4K@0xd0000000:5"),
            Some(MmioDevice {
                size: 4096,
                addr: 0xd000_0000,
                irq: 5
            })
        );
        assert_eq!(
            parse_mmio_device(b"0x1000@3489665024:11:2"),
            Some(MmioDevice {
                size: 4096,
                addr: 0xd000_1000,
                irq: 11
            })
        );
        assert_eq!(parse_mmio_device(b"4K@0xd0000000"), None);
        assert_eq!(parse_mmio_device(b"@0xd0000000:5"), None);
        assert_eq!(parse_mmio_device(b"4K@0xd0000000:5:1:2"), None);
        assert_eq!(parse_mmio_device(b"4K@zz:5"), None);
        assert_eq!(parse_mmio_device(b"0@0x1000:5"), None);
    }

    #[test]
    fn all_devices_of_a_command_line() {
        let line = b"console=ttyS0 guest.mode=kv virtio_mmio.device=4K@0xd0000000:5 \
                     virtio_mmio.device=4K@0xd0001000:6  virtio_mmio.device=oops";
        let devs = mmio_devices(line);
        assert_eq!(devs.len(), 3);
        assert_eq!(
            devs[0],
            Ok(MmioDevice {
                size: 4096,
                addr: 0xd000_0000,
                irq: 5
            })
        );
        assert_eq!(
            devs[1],
            Ok(MmioDevice {
                size: 4096,
                addr: 0xd000_1000,
                irq: 6
            })
        );
        assert_eq!(devs[2], Err(&b"virtio_mmio.device=oops"[..]));
        assert!(mmio_devices(b"guest.mode=kv").is_empty());
    }

    #[test]
    fn ipv4() {
        assert_eq!(parse_ipv4(b"10.77.0.2"), Some([10, 77, 0, 2]));
        assert_eq!(parse_ipv4(b"10.77.0"), None);
        assert_eq!(parse_ipv4(b"10.77.0.256"), None);
        assert_eq!(parse_ipv4(b"10.77.0.2.1"), None);
        assert_eq!(parse_ipv4(b"10..0.2"), None);
        assert_eq!(parse_ipv4_cidr(b"10.77.0.2/24"), Some(([10, 77, 0, 2], 24)));
        assert_eq!(parse_ipv4_cidr(b"10.77.0.2"), None);
        assert_eq!(parse_ipv4_cidr(b"10.77.0.2/33"), None);
        assert_eq!(parse_ipv4_cidr(b"10.77.0.2/0"), None);
        assert_eq!(parse_ipv4_cidr(b"10.77.0.2/"), None);
    }
}
