//! What a backend reads from its VMM on the FT control socket, and the limits on it.
//!
//! The VMM sends a backend three small messages only (`Hello`, `Release`, `SetRole`), so a
//! frame from the VMM is at most [`MAX_VMM_FRAME`] bytes: a longer length field is a
//! protocol error before anything is allocated. The `Hello` must arrive within
//! [`HELLO_TIMEOUT`] of the connection's first byte (and the first byte within the same time
//! of connecting: see `accept`). After it, the VMM may be silent for as long as it likes (it
//! sends `Release` only when there is an output to release, and a quiet guest has none), but
//! a frame it has begun must be finished: every read inside a frame must return within
//! [`FRAME_TIMEOUT`], else the connection has stalled and is dropped, so that the next VMM
//! can connect.

use std::io::{self, Read};
use std::time::Duration;

use crate::{ControlError, Message, Role, VERSION};

/// Longest frame a backend accepts from its VMM (the largest, `Release`, is 13 bytes with
/// its length prefix).
pub const MAX_VMM_FRAME: usize = 64;
/// How long a new FT control connection may take to send its first byte, and then to
/// finish its `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the next bytes of a frame the VMM has begun.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(2);

fn stalled(e: io::Error) -> ControlError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ControlError::Stalled,
        _ => ControlError::Io(e),
    }
}

/// Reads and checks the VMM's `Hello` (the socket's read timeout should be
/// [`HELLO_TIMEOUT`]); does not answer it.
pub fn read_hello(r: &mut impl Read) -> Result<Role, ControlError> {
    match Message::read_limited(r, MAX_VMM_FRAME).map_err(|e| match e {
        ControlError::Io(e) => stalled(e),
        e => e,
    })? {
        Some(Message::Hello { version, role }) if version == VERSION => Ok(role),
        Some(Message::Hello { version, .. }) => Err(ControlError::Version(version)),
        _ => Err(ControlError::Malformed("expected Hello")),
    }
}

/// Reads the next message from the VMM after the `Hello`, on a socket whose read timeout is
/// [`FRAME_TIMEOUT`]: a timeout before the frame's first byte is waited out, one inside the
/// frame is [`ControlError::Stalled`]. `Ok(None)` on a clean EOF between frames.
pub fn read_vmm_message(r: &mut impl Read) -> Result<Option<Message>, ControlError> {
    let mut len = [0u8; 4];
    loop {
        match r.read(&mut len[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    r.read_exact(&mut len[1..]).map_err(stalled)?;
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_VMM_FRAME {
        return Err(ControlError::TooLarge(n));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).map_err(stalled)?;
    Message::decode(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn frames_from_the_vmm_are_small_and_must_not_stall() {
        let (mut a, mut b) = UnixStream::pair().expect("pair");
        b.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        // Waiting between frames is fine; a frame follows.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(350));
            Message::Release { id: 7 }
                .write_to(&mut a)
                .expect("release");
            // A frame cut after its first bytes.
            a.write_all(&[9, 0]).expect("partial");
            std::thread::sleep(Duration::from_millis(400));
            a
        });
        assert_eq!(
            read_vmm_message(&mut b).expect("release"),
            Some(Message::Release { id: 7 })
        );
        assert!(matches!(
            read_vmm_message(&mut b),
            Err(ControlError::Stalled)
        ));
        let mut a = writer.join().expect("writer");
        // An oversized length is refused before anything is read or allocated.
        let (mut c, mut d) = UnixStream::pair().expect("pair");
        c.write_all(&(64u32 << 20).to_le_bytes()).expect("huge");
        assert!(matches!(
            read_vmm_message(&mut d),
            Err(ControlError::TooLarge(_))
        ));
        assert!(matches!(
            read_hello(&mut &(1u32 << 30).to_le_bytes()[..]),
            Err(ControlError::TooLarge(_))
        ));
        // A Hello, checked.
        Message::Hello {
            version: VERSION,
            role: Role::Primary,
        }
        .write_to(&mut a)
        .expect("hello");
        assert_eq!(read_hello(&mut b).expect("hello"), Role::Primary);
        drop(a);
        assert_eq!(read_vmm_message(&mut b).expect("eof"), None);
    }
}
