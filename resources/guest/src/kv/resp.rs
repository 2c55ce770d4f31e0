//! The Redis serialization protocol, version 2 (RESP2; Redis documentation, "Redis
//! serialization protocol specification"): requests and replies.
//!
//! Requests come in two forms, as in Redis (networking.c, processMultibulkBuffer and
//! processInlineBuffer):
//! - multibulk: `*<argc>\r\n` followed by argc bulk strings `$<len>\r\n<bytes>\r\n`;
//! - inline: one line of words separated by blanks, with Redis' quoting rules
//!   (sds.c, sdssplitargs), terminated by `\n` (an `\r` before it is dropped).
//!
//! `parse` looks at the start of a connection's input buffer and returns one complete
//! command, `Incomplete` if more bytes are needed (a command may span any number of TCP
//! segments), or a protocol error, after which the server replies the error and closes the
//! connection, as Redis does. Several commands in one buffer (pipelining) are parsed by
//! calling `parse` again after the consumed bytes.

use alloc::vec::Vec;

/// Longest inline request, and longest `*`/`$` header line (Redis PROTO_INLINE_MAX_SIZE).
pub const MAX_INLINE: usize = 64 * 1024;
/// Most arguments in a multibulk request (Redis allows 1024*1024 too).
pub const MAX_ARGS: usize = 1024 * 1024;
/// Longest bulk string in a request. Redis' default proto-max-bulk-len is 512 MiB; this guest
/// has a small heap and disk, so 1 MiB.
pub const MAX_BULK: usize = 1024 * 1024;

/// The outcome of `parse`.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A command with its arguments (at least one: the command name) and the number of
    /// input bytes it took.
    Command(Vec<Vec<u8>>, usize),
    /// A request without arguments (an empty line, `*0`): skip this many bytes.
    Empty(usize),
    /// More input is needed.
    Incomplete,
}

/// A protocol error: the text after `-ERR Protocol error: `.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'*') => parse_multibulk(buf),
        Some(_) => parse_inline(buf),
    }
}

/// Finds the `\r\n`-terminated line starting at `from`: returns (line, index after `\r\n`).
fn line_at(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = &buf[from..];
    let cr = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..cr], from + cr + 2))
}

fn parse_multibulk(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    let Some((line, mut pos)) = line_at(buf, 0) else {
        return if buf.len() > MAX_INLINE {
            Err(ProtocolError("too big mbulk count string"))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let argc = match parse_i64(&line[1..]) {
        Some(n) if n <= MAX_ARGS as i64 => n,
        _ => return Err(ProtocolError("invalid multibulk length")),
    };
    if argc <= 0 {
        return Ok(Parsed::Empty(pos));
    }
    let mut args = Vec::with_capacity(argc.min(1024) as usize);
    for _ in 0..argc {
        let Some((line, data)) = line_at(buf, pos) else {
            return if buf.len() - pos > MAX_INLINE {
                Err(ProtocolError("too big bulk count string"))
            } else {
                Ok(Parsed::Incomplete)
            };
        };
        match line.first() {
            Some(b'$') => {}
            Some(&c) => return Err(ProtocolError(expected_dollar(c))),
            None => return Err(ProtocolError("expected '$', got ' '")),
        }
        let len = match parse_i64(&line[1..]) {
            Some(n) if (0..=MAX_BULK as i64).contains(&n) => n as usize,
            _ => return Err(ProtocolError("invalid bulk length")),
        };
        // The bulk data and its CRLF (which Redis skips without looking at it).
        if buf.len() < data + len + 2 {
            return Ok(Parsed::Incomplete);
        }
        args.push(buf[data..data + len].to_vec());
        pos = data + len + 2;
    }
    Ok(Parsed::Command(args, pos))
}

/// Redis' message is "expected '$', got '%c'"; the text must be static, so each printable
/// ASCII character has its own message (a table built at compile time) and anything else a
/// generic one.
fn expected_dollar(c: u8) -> &'static str {
    match c {
        0x20..=0x7e => EXPECTED[(c - 0x20) as usize],
        _ => "expected '$', got something else",
    }
}

macro_rules! expected_table {
    ($($c:literal)*) => { [$(concat!("expected '$', got '", $c, "'")),*] };
}

const EXPECTED: [&str; 95] = expected_table!(
    " " "!" "\"" "#" "$" "%" "&" "'" "(" ")" "*" "+" "," "-" "." "/"
    "0" "1" "2" "3" "4" "5" "6" "7" "8" "9" ":" ";" "<" "=" ">" "?"
    "@" "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O"
    "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" "[" "\\" "]" "^" "_"
    "`" "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o"
    "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" "{" "|" "}" "~"
);

fn parse_inline(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    let Some(nl) = buf.iter().position(|&c| c == b'\n') else {
        return if buf.len() > MAX_INLINE {
            Err(ProtocolError("too big inline request"))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let mut line = &buf[..nl];
    if let [head @ .., b'\r'] = line {
        line = head;
    }
    let args = split_args(line).ok_or(ProtocolError("unbalanced quotes in request"))?;
    if args.is_empty() {
        Ok(Parsed::Empty(nl + 1))
    } else {
        Ok(Parsed::Command(args, nl + 1))
    }
}

/// Splits an inline request like Redis' sdssplitargs: blanks separate words; `"..."` allows
/// the escapes `\n \r \t \b \a \\ \" \xHH`; `'...'` allows `\'`; a closing quote must be
/// followed by a blank or the end. `None` for unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let (mut in_dq, mut in_sq) = (false, false);
        let mut cur = Vec::new();
        loop {
            let c = at(p);
            if in_dq {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && hex(at(p + 2)).is_some()
                    && hex(at(p + 3)).is_some()
                {
                    cur.push(hex(at(p + 2))? * 16 + hex(at(p + 3))?);
                    p += 3;
                } else if c == b'\\' && p + 1 < line.len() {
                    p += 1;
                    cur.push(match line[p] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if p + 1 < line.len() && !is_space(line[p + 1]) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if p >= line.len() {
                    return None;
                } else {
                    cur.push(c);
                }
            } else if in_sq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if p + 1 < line.len() && !is_space(line[p + 1]) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if p >= line.len() {
                    return None;
                } else {
                    cur.push(c);
                }
            } else if p >= line.len() || is_space(c) {
                break;
            } else if c == b'"' {
                in_dq = true;
            } else if c == b'\'' {
                in_sq = true;
            } else {
                cur.push(c);
            }
            p += 1;
        }
        args.push(cur);
    }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Strict decimal i64 as Redis' string2ll: optional `-`, no `+`, no blanks, no leading
/// zeros (except "0" itself), no overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] => return (!neg).then_some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    if digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: i128 = 0;
    for &d in digits {
        v = v * 10 + i128::from(d - b'0');
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

// ---- replies (RESP2 types: simple string, error, integer, bulk string, array) ----

/// `+<s>\r\n`
pub fn simple(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'+');
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

/// `-<msg>\r\n`; `msg` includes the error code (`ERR ...`). Like Redis' addReplyError,
/// CR and LF in the message become spaces so that the reply stays one line.
pub fn error(out: &mut Vec<u8>, msg: &[u8]) {
    out.push(b'-');
    out.extend(
        msg.iter()
            .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
    );
    out.extend_from_slice(b"\r\n");
}

/// `:<n>\r\n`
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `$<len>\r\n<bytes>\r\n`
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    push_decimal(out, bytes.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// The nil bulk string `$-1\r\n`.
pub fn nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// An array header `*<n>\r\n`; the caller appends the n elements.
pub fn array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n as i64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal representation of `n`.
pub fn push_decimal(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests;
