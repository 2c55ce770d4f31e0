//! The write side of one VMM connection, and the one write-timeout policy of every backend.
//!
//! Messages to the VMM (`HelloAck`, `Completion`, `OutputReady`) come from several threads
//! of a backend (vring workers, the NBD reader, the FT reader on `Release`); the backend
//! keeps its [`VmmConn`] under its own lock, which keeps each frame whole.
//!
//! Write-timeout policy: a message may block for at most [`FT_WRITE_TIMEOUT`]. The VMM
//! reads its FT sockets on a thread of its own that never waits for anything else, so a VMM
//! that has not read for that long is stopped or wedged (SIGSTOP, a dead host whose socket is
//! still open). The write then fails, the connection is shut down for both sides and the
//! backend falls back to plain mode with its held outputs *discarded* (never sent: see
//! [`crate::gate`]), which is the safe side of the output rule. Without a bound a wedged VMM
//! would stall the guest's device for ever; a shorter one would end FT on an ordinary
//! scheduling hiccup of the two shared cores.

use std::io;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ft_control::{ControlError, Message, VERSION};

/// How long one message to the VMM may block before the connection is declared dead.
pub const FT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The write side of one VMM connection (a clone of the stream the server reads).
/// Dropping it shuts the connection down, which also wakes its reader up.
#[derive(Debug)]
pub struct VmmConn {
    stream: UnixStream,
    serial: u64,
}

impl VmmConn {
    /// Wraps the write side of accepted connection number `serial`, with the write timeout.
    pub fn new(stream: UnixStream, serial: u64) -> io::Result<VmmConn> {
        stream.set_write_timeout(Some(FT_WRITE_TIMEOUT))?;
        Ok(VmmConn { stream, serial })
    }

    /// The number of the accepted connection (a reader of a replaced connection is told
    /// apart by it).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Answers the VMM's `Hello`. A backend calls it only once the requested role is in
    /// force, under its lock: a VMM that has the answer can rely on every later completion
    /// and output following that role.
    pub fn greet(&mut self) -> Result<(), ControlError> {
        self.send(&Message::HelloAck { version: VERSION })
    }

    /// Sends one message. On failure (including the write timeout) the connection is shut
    /// down for both sides, since a partly written frame leaves the stream unusable; the
    /// caller then drops this connection and does the plain-mode thing.
    pub fn send(&mut self, msg: &Message) -> Result<(), ControlError> {
        let result = msg.write_to(&mut self.stream);
        if let Err(e) = &result {
            log::warn!("FT connection {}: sending failed: {e}", self.serial);
            self.shutdown();
        }
        result
    }

    fn shutdown(&self) {
        if let Err(e) = self.stream.shutdown(Shutdown::Both) {
            log::debug!("FT connection {}: shutdown: {e}", self.serial);
        }
    }
}

impl Drop for VmmConn {
    fn drop(&mut self) {
        self.shutdown();
    }
}
