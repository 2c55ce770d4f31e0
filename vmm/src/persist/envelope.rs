//! The state envelope: what wraps every saved state that leaves the process (the join's
//! `DeviceState` blobs, snapshot files), so that a reader can tell a foreign or corrupted
//! blob, or one of a format it does not know, from a valid one before it parses anything.
//!
//! ```text
//! offset 0   magic: 8 bytes   what the payload is (MAGIC_VCPU, MAGIC_MACHINE, MAGIC_SNAPSHOT)
//!        8   version: u32 LE  format version of the payload (FORMAT_VERSION)
//!       12   length: u64 LE   payload bytes
//!       20   crc32: u32 LE    CRC-32/IEEE of the payload
//!       24   payload
//! ```
//!
//! A decoder is given the magic it expects and a bound on the length; it checks the length
//! against the bound before it reads (or allocates) any of the payload, and never allocates
//! more than the bytes that actually arrive.

use std::io::{Read, Seek, SeekFrom, Write};

pub const HEADER_LEN: usize = 24;
/// The version of every payload format written by this VMM (the JSON states and the
/// snapshot file layout of `persist::file`).
pub const FORMAT_VERSION: u32 = 1;
/// The join's vCPU state (`ft::state::VcpuState`, JSON).
pub const MAGIC_VCPU: [u8; 8] = *b"FTVMVCPU";
/// The join's machine state (`ft::state::MachineState`, JSON).
pub const MAGIC_MACHINE: [u8; 8] = *b"FTVMMACH";
/// A snapshot file (`persist::file`).
pub const MAGIC_SNAPSHOT: [u8; 8] = *b"FTVMSNAP";

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a {expected} state: wrong magic {found:02x?}")]
    Magic {
        expected: &'static str,
        found: [u8; 8],
    },
    #[error("state format version {0} is not known to this VMM (it reads {FORMAT_VERSION})")]
    Version(u32),
    #[error("state of {len} bytes is over the bound of {max}")]
    TooLong { len: u64, max: u64 },
    #[error("state truncated: {got} of {wanted} bytes")]
    Truncated { got: u64, wanted: u64 },
    #[error("state checksum mismatch: header says {expected:#010x}, payload has {got:#010x}")]
    Checksum { expected: u32, got: u32 },
    #[error("state I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Human name of a magic, for errors.
fn name_of(magic: &[u8; 8]) -> &'static str {
    match magic {
        m if m == &MAGIC_VCPU => "vCPU",
        m if m == &MAGIC_MACHINE => "machine",
        m if m == &MAGIC_SNAPSHOT => "snapshot",
        _ => "known",
    }
}

fn header(magic: &[u8; 8], len: u64, crc: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&len.to_le_bytes());
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// `payload` in an envelope.
pub fn seal(magic: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header(
        magic,
        payload.len() as u64,
        crc32fast::hash(payload),
    ));
    out.extend_from_slice(payload);
    out
}

/// The payload of an envelope held in memory (the join's blobs). Bytes after the payload
/// are an error too: a blob is exactly one envelope.
pub fn open<'a>(magic: &[u8; 8], max: u64, bytes: &'a [u8]) -> Result<&'a [u8], EnvelopeError> {
    let mut r = bytes;
    let (len, crc) = read_header(&mut r, magic, max)?;
    if (r.len() as u64) < len {
        return Err(EnvelopeError::Truncated {
            got: r.len() as u64,
            wanted: len,
        });
    }
    if r.len() as u64 > len {
        return Err(EnvelopeError::TooLong {
            len: r.len() as u64,
            max: len,
        });
    }
    check_crc(crc, r)?;
    Ok(r)
}

/// Reads and checks a header: magic, version, length bound. Returns (length, crc).
fn read_header(r: &mut impl Read, magic: &[u8; 8], max: u64) -> Result<(u64, u32), EnvelopeError> {
    let mut h = [0u8; HEADER_LEN];
    let got = read_full(r, &mut h)?;
    if got < HEADER_LEN {
        return Err(EnvelopeError::Truncated {
            got: got as u64,
            wanted: HEADER_LEN as u64,
        });
    }
    let field = |at: usize, n: usize| &h[at..at + n];
    let mut found = [0u8; 8];
    found.copy_from_slice(field(0, 8));
    if &found != magic {
        return Err(EnvelopeError::Magic {
            expected: name_of(magic),
            found,
        });
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != FORMAT_VERSION {
        return Err(EnvelopeError::Version(version));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(field(12, 8));
    let len = u64::from_le_bytes(len);
    if len > max {
        return Err(EnvelopeError::TooLong { len, max });
    }
    Ok((len, u32::from_le_bytes([h[20], h[21], h[22], h[23]])))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn check_crc(expected: u32, payload: &[u8]) -> Result<(), EnvelopeError> {
    let got = crc32fast::hash(payload);
    if got != expected {
        return Err(EnvelopeError::Checksum { expected, got });
    }
    Ok(())
}

/// Reads one envelope from a stream (a snapshot file) and returns its payload. The buffer
/// grows with the bytes read, so a header that claims more than the file holds costs no
/// more memory than the file.
pub fn read(r: &mut impl Read, magic: &[u8; 8], max: u64) -> Result<Vec<u8>, EnvelopeError> {
    let (len, crc) = read_header(r, magic, max)?;
    let mut payload = Vec::new();
    r.take(len).read_to_end(&mut payload)?;
    if (payload.len() as u64) < len {
        return Err(EnvelopeError::Truncated {
            got: payload.len() as u64,
            wanted: len,
        });
    }
    check_crc(crc, &payload)?;
    Ok(payload)
}

/// Writes an envelope whose payload is streamed (a snapshot's guest memory is not copied
/// into one buffer): a placeholder header first, the payload through `write`, then the
/// real header once the length and checksum are known.
pub struct SealWriter<W: Write + Seek> {
    inner: W,
    magic: [u8; 8],
    start: u64,
    len: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write + Seek> SealWriter<W> {
    pub fn new(mut inner: W, magic: [u8; 8]) -> std::io::Result<Self> {
        let start = inner.stream_position()?;
        inner.write_all(&[0u8; HEADER_LEN])?;
        Ok(SealWriter {
            inner,
            magic,
            start,
            len: 0,
            crc: crc32fast::Hasher::new(),
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Writes the header; returns the writer and the envelope's total size.
    pub fn finish(mut self) -> std::io::Result<(W, u64)> {
        let end = self.inner.stream_position()?;
        self.inner.seek(SeekFrom::Start(self.start))?;
        self.inner
            .write_all(&header(&self.magic, self.len, self.crc.finalize()))?;
        self.inner.seek(SeekFrom::Start(end))?;
        self.inner.flush()?;
        Ok((self.inner, end - self.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1 << 20;

    fn sealed() -> Vec<u8> {
        seal(&MAGIC_MACHINE, b"{\"pic\":1}")
    }

    #[test]
    fn round_trips_in_memory_and_through_a_stream() {
        let s = sealed();
        assert_eq!(s.len(), HEADER_LEN + 9);
        assert_eq!(open(&MAGIC_MACHINE, MAX, &s).expect("open"), b"{\"pic\":1}");
        let mut w = SealWriter::new(std::io::Cursor::new(Vec::new()), MAGIC_MACHINE).expect("new");
        w.write(b"{\"pic\"").expect("write");
        w.write(b":1}").expect("write");
        let (cursor, total) = w.finish().expect("finish");
        assert_eq!(total, s.len() as u64);
        assert_eq!(cursor.into_inner(), s, "streamed = sealed at once");
        let back = read(&mut &s[..], &MAGIC_MACHINE, MAX).expect("read");
        assert_eq!(back, b"{\"pic\":1}");
    }

    #[test]
    fn wrong_magic_is_refused() {
        let s = sealed();
        assert!(matches!(
            open(&MAGIC_VCPU, MAX, &s),
            Err(EnvelopeError::Magic {
                expected: "vCPU",
                ..
            })
        ));
        assert!(matches!(
            read(
                &mut &b"{\"json\": \"not an envelope at all\"}"[..],
                &MAGIC_SNAPSHOT,
                MAX
            ),
            Err(EnvelopeError::Magic { .. })
        ));
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut s = sealed();
        s[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            open(&MAGIC_MACHINE, MAX, &s),
            Err(EnvelopeError::Version(2))
        ));
    }

    #[test]
    fn oversized_length_is_refused_before_reading_the_payload() {
        let mut s = sealed();
        s[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            open(&MAGIC_MACHINE, MAX, &s),
            Err(EnvelopeError::TooLong {
                len: u64::MAX,
                max: MAX
            })
        ));
        // A reader that would block or fail on the payload is never asked for it.
        struct HeaderOnly(Vec<u8>);
        impl Read for HeaderOnly {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Err(std::io::Error::other("payload read"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0.drain(..n);
                Ok(n)
            }
        }
        let mut r = HeaderOnly(s[..HEADER_LEN].to_vec());
        assert!(matches!(
            read(&mut r, &MAGIC_MACHINE, MAX),
            Err(EnvelopeError::TooLong { .. })
        ));
    }

    #[test]
    fn truncation_is_refused() {
        let s = sealed();
        for cut in [0, 5, HEADER_LEN, s.len() - 1] {
            assert!(
                matches!(
                    open(&MAGIC_MACHINE, MAX, &s[..cut]),
                    Err(EnvelopeError::Truncated { .. })
                ),
                "cut at {cut}"
            );
            assert!(
                matches!(
                    read(&mut &s[..cut], &MAGIC_MACHINE, MAX),
                    Err(EnvelopeError::Truncated { .. })
                ),
                "stream cut at {cut}"
            );
        }
        let mut longer = s.clone();
        longer.push(0);
        assert!(matches!(
            open(&MAGIC_MACHINE, MAX, &longer),
            Err(EnvelopeError::TooLong { .. })
        ));
    }

    #[test]
    fn a_flipped_payload_byte_is_refused() {
        let mut s = sealed();
        s[HEADER_LEN + 3] ^= 0x01;
        assert!(matches!(
            open(&MAGIC_MACHINE, MAX, &s),
            Err(EnvelopeError::Checksum { .. })
        ));
        assert!(matches!(
            read(&mut &s[..], &MAGIC_MACHINE, MAX),
            Err(EnvelopeError::Checksum { .. })
        ));
    }
}
