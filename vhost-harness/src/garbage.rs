//! Sending garbage to a vhost-user socket (robustness tests).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::hostile::closed_within;
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
    closed_within(&s, timeout)
}
