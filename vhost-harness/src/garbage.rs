//! Sending garbage to a vhost-user socket (robustness tests).

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{connect_stream, HarnessError};

/// Connects to `socket`, writes `bytes`, and waits up to `timeout` for the peer to close
/// the connection. Returns `true` if it did (what a backend should do with garbage).
pub fn send_garbage(
    socket: impl AsRef<Path>,
    bytes: &[u8],
    timeout: Duration,
) -> Result<bool, HarnessError> {
    let mut s = connect_stream(socket.as_ref(), timeout)?;
    s.write_all(bytes)?;
    s.set_read_timeout(Some(timeout))?;
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + timeout;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}
