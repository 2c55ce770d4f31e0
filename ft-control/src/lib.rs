//! The FT control channel between the VMM and a vhost-user backend (docs/PROTOCOL.md,
//! "FT control channel"). It is a separate Unix socket that the backend offers with
//! `--ft-socket PATH`; a backend without it stays a plain vhost-user backend.
//!
//! Why it exists: in fault-tolerant mode the backend must not write guest memory on its own
//! (the guest could see the write at any instruction, which a backup cannot reproduce), and
//! must not release an output (a frame, a disk write) before the backup has the log up to it.
//! So the backend sends each completion's memory writes to the VMM, which applies and logs
//! them at a landmark, and announces each output, which the VMM releases once it is safe.
//!
//! Framing: `u32 length` (of what follows, little-endian) | `u8 type` | payload.
//!
//! Besides the messages: [`local`] (how the local sockets of the VMM and the backends are
//! created, and who is on the other end), [`accept`] (new connections wait for their first
//! message together) and [`inbound`] (the limits on what a backend reads from its VMM).

pub mod accept;
pub mod digest;
pub mod inbound;
pub mod local;

use std::io::{self, Read, Write};

pub const VERSION: u32 = 1;
/// Largest frame accepted (a completion carries at most one request's data).
pub const MAX_FRAME: usize = 40 << 20;

/// Role of the VMM that connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Completions go to the VMM; outputs wait for `Release`.
    Primary,
    /// Plain mode: write guest memory, release outputs at once (a survivor after failover).
    Live,
}

/// One guest-memory write of a completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemWrite {
    pub gpa: u64,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// VMM -> backend, first message.
    Hello { version: u32, role: Role },
    /// Backend -> VMM, answer to `Hello`.
    HelloAck { version: u32 },
    /// Backend -> VMM: descriptor chain `head` of `queue` is done; the VMM writes `writes`,
    /// then the used element (head, len) and the used index, at a landmark.
    Completion {
        queue: u16,
        head: u16,
        len: u32,
        writes: Vec<MemWrite>,
    },
    /// Backend -> VMM: output `id` (numbered from 1, in order) is ready to leave; `digest` is
    /// SHA-256 over the readable bytes of chain `head` of `queue`.
    OutputReady {
        id: u64,
        queue: u16,
        head: u16,
        digest: [u8; 32],
    },
    /// VMM -> backend: outputs up to and including `id` may leave.
    Release { id: u64 },
    /// VMM -> backend: switch role (a backup going live becomes `Live`).
    SetRole { role: Role },
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("unsupported FT control version {0}")]
    Version(u32),
    #[error(
        "the peer stopped in the middle of a frame for more than {:?}",
        inbound::FRAME_TIMEOUT
    )]
    Stalled,
}

/// A length field of the wire format. Lengths of the frames this crate builds are bounded by
/// `MAX_FRAME`, far below `u32::MAX`; one that were not would saturate, and the reader would
/// refuse the frame as longer than `MAX_FRAME`.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn role_byte(r: Role) -> u8 {
    match r {
        Role::Primary => 1,
        Role::Live => 2,
    }
}

fn role_from(b: u8) -> Result<Role, ControlError> {
    match b {
        1 => Ok(Role::Primary),
        2 => Ok(Role::Live),
        _ => Err(ControlError::Malformed("role")),
    }
}

impl Message {
    /// The name of the message, for logs (never its payload, which may be megabytes).
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::HelloAck { .. } => "HelloAck",
            Message::Completion { .. } => "Completion",
            Message::OutputReady { .. } => "OutputReady",
            Message::Release { .. } => "Release",
            Message::SetRole { .. } => "SetRole",
        }
    }

    /// Encodes with the length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 4];
        match self {
            Message::Hello { version, role } => {
                b.push(1);
                b.extend_from_slice(&version.to_le_bytes());
                b.push(role_byte(*role));
            }
            Message::HelloAck { version } => {
                b.push(2);
                b.extend_from_slice(&version.to_le_bytes());
            }
            Message::Completion {
                queue,
                head,
                len,
                writes,
            } => {
                b.push(3);
                b.extend_from_slice(&queue.to_le_bytes());
                b.extend_from_slice(&head.to_le_bytes());
                b.extend_from_slice(&len.to_le_bytes());
                b.extend_from_slice(&len_u32(writes.len()).to_le_bytes());
                for w in writes {
                    b.extend_from_slice(&w.gpa.to_le_bytes());
                    b.extend_from_slice(&len_u32(w.data.len()).to_le_bytes());
                    b.extend_from_slice(&w.data);
                }
            }
            Message::OutputReady {
                id,
                queue,
                head,
                digest,
            } => {
                b.push(4);
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&queue.to_le_bytes());
                b.extend_from_slice(&head.to_le_bytes());
                b.extend_from_slice(digest);
            }
            Message::Release { id } => {
                b.push(5);
                b.extend_from_slice(&id.to_le_bytes());
            }
            Message::SetRole { role } => {
                b.push(6);
                b.push(role_byte(*role));
            }
        }
        let len = len_u32(b.len() - 4);
        b[..4].copy_from_slice(&len.to_le_bytes());
        b
    }

    /// Decodes one frame body (type byte + payload, without the length prefix).
    pub fn decode(body: &[u8]) -> Result<Message, ControlError> {
        let mut r = Reader(body);
        let msg = match r.u8()? {
            1 => Message::Hello {
                version: r.u32()?,
                role: role_from(r.u8()?)?,
            },
            2 => Message::HelloAck { version: r.u32()? },
            3 => {
                let (queue, head, len) = (r.u16()?, r.u16()?, r.u32()?);
                let n = r.u32()? as usize;
                let mut writes = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let gpa = r.u64()?;
                    let l = r.u32()? as usize;
                    writes.push(MemWrite {
                        gpa,
                        data: r.bytes(l)?.to_vec(),
                    });
                }
                Message::Completion {
                    queue,
                    head,
                    len,
                    writes,
                }
            }
            4 => {
                let (id, queue, head) = (r.u64()?, r.u16()?, r.u16()?);
                let digest = r
                    .bytes(32)?
                    .try_into()
                    .map_err(|_| ControlError::Malformed("digest"))?;
                Message::OutputReady {
                    id,
                    queue,
                    head,
                    digest,
                }
            }
            5 => Message::Release { id: r.u64()? },
            6 => Message::SetRole {
                role: role_from(r.u8()?)?,
            },
            t => return Err(ControlError::UnknownType(t)),
        };
        if !r.0.is_empty() {
            return Err(ControlError::Malformed("trailing bytes"));
        }
        Ok(msg)
    }

    pub fn write_to(&self, w: &mut impl Write) -> Result<(), ControlError> {
        w.write_all(&self.encode())?;
        Ok(())
    }

    /// Reads one message; `Ok(None)` on a clean EOF between messages.
    pub fn read_from(r: &mut impl Read) -> Result<Option<Message>, ControlError> {
        Self::read_limited(r, MAX_FRAME)
    }

    /// [`Message::read_from`] for frames of at most `max` bytes: a longer length field is an
    /// error before anything is allocated.
    pub fn read_limited(r: &mut impl Read, max: usize) -> Result<Option<Message>, ControlError> {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > max {
            return Err(ControlError::TooLarge(len));
        }
        // Read what arrives instead of allocating what the prefix claims: a peer that sends
        // a large length and then nothing costs only the bytes it really sent.
        let mut body = Vec::with_capacity(len.min(64 << 10));
        r.take(len as u64).read_to_end(&mut body)?;
        if body.len() < len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        Message::decode(&body).map(Some)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ControlError> {
        if self.0.len() < n {
            return Err(ControlError::Malformed("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ControlError> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ControlError> {
        Ok(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Result<u32, ControlError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, ControlError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// The backend's side of the handshake: reads `Hello` (see [`inbound::read_hello`]),
/// answers `HelloAck`.
pub fn accept_hello(stream: &mut (impl Read + Write)) -> Result<Role, ControlError> {
    let role = inbound::read_hello(stream)?;
    Message::HelloAck { version: VERSION }.write_to(stream)?;
    Ok(role)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Message> {
        vec![
            Message::Hello {
                version: VERSION,
                role: Role::Primary,
            },
            Message::HelloAck { version: VERSION },
            Message::Completion {
                queue: 1,
                head: 7,
                len: 0,
                writes: vec![],
            },
            Message::Completion {
                queue: 0,
                head: 255,
                len: 1526,
                writes: vec![
                    MemWrite {
                        gpa: 0x1000,
                        data: vec![1, 2, 3],
                    },
                    MemWrite {
                        gpa: 0xd000,
                        data: vec![],
                    },
                ],
            },
            Message::OutputReady {
                id: 9,
                queue: 1,
                head: 3,
                digest: [7; 32],
            },
            Message::Release { id: u64::MAX },
            Message::SetRole { role: Role::Live },
        ]
    }

    #[test]
    fn every_message_round_trips_through_a_stream() {
        let mut wire = Vec::new();
        for m in all() {
            m.write_to(&mut wire).expect("write");
        }
        let mut r = &wire[..];
        for m in all() {
            assert_eq!(Message::read_from(&mut r).expect("read"), Some(m));
        }
        assert_eq!(Message::read_from(&mut r).expect("eof"), None);
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(matches!(
            Message::decode(&[99]),
            Err(ControlError::UnknownType(99))
        ));
        assert!(matches!(
            Message::decode(&[5, 1, 2]),
            Err(ControlError::Malformed(_))
        ));
        assert!(matches!(
            Message::decode(&[6, 9]),
            Err(ControlError::Malformed(_))
        ));
        let mut extra = Message::Release { id: 1 }.encode()[4..].to_vec();
        extra.push(0);
        assert!(matches!(
            Message::decode(&extra),
            Err(ControlError::Malformed(_))
        ));
        let huge = len_u32(MAX_FRAME + 1).to_le_bytes();
        assert!(matches!(
            Message::read_from(&mut &huge[..]),
            Err(ControlError::TooLarge(_))
        ));
        // A completion claiming 4 GiB of data does not allocate it.
        let mut c = vec![
            3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        c.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Message::decode(&c),
            Err(ControlError::Malformed("truncated"))
        ));
    }

    #[test]
    fn handshake_checks_the_version() {
        struct Duplex(std::io::Cursor<Vec<u8>>, Vec<u8>);
        impl Read for Duplex {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.0.read(b)
            }
        }
        impl Write for Duplex {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.1.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut ok = Duplex(
            std::io::Cursor::new(
                Message::Hello {
                    version: VERSION,
                    role: Role::Primary,
                }
                .encode(),
            ),
            vec![],
        );
        assert_eq!(accept_hello(&mut ok).expect("hello"), Role::Primary);
        assert_eq!(
            Message::read_from(&mut &ok.1[..]).expect("ack"),
            Some(Message::HelloAck { version: VERSION })
        );
        let mut old = Duplex(
            std::io::Cursor::new(
                Message::Hello {
                    version: 99,
                    role: Role::Primary,
                }
                .encode(),
            ),
            vec![],
        );
        assert!(matches!(
            accept_hello(&mut old),
            Err(ControlError::Version(99))
        ));
    }
}
