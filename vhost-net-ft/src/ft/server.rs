//! The `--ft-socket` server: one VMM connection at a time, forever.
//!
//! A connection must start with `Hello` (answered with `HelloAck`) within
//! [`HANDSHAKE_TIMEOUT`]; then the VMM sends `Release` and `SetRole`. The `Hello` is checked
//! exactly as `ft_control::accept_hello` does, but the answer is sent by
//! [`FtLink::attach`] once the role is in force (see there). Anything else — a bad
//! handshake, an unknown or malformed message, a message only the backend sends — drops that
//! connection with a logged error (the link goes back to plain mode; held outputs are
//! discarded, never sent), and the next connection is accepted. The backend itself never
//! stops because of the VMM.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ft_control::{ControlError, Message, Role, VERSION};
use log::{error, info, warn};

use crate::error::FtError;
use crate::ft::link::FtLink;
use crate::net::stats::NetStats;

/// How long a new connection may take to send its `Hello` (a silent client must not block
/// the next one forever).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A bound FT control socket.
pub struct FtServer {
    path: PathBuf,
    listener: UnixListener,
    link: Arc<FtLink>,
    handshake_timeout: Duration,
}

/// Reads the VMM's `Hello` (the checks of `ft_control::accept_hello`, without the answer).
fn read_hello(stream: &mut UnixStream) -> Result<Role, ControlError> {
    match Message::read_from(stream)? {
        Some(Message::Hello { version, role }) if version == VERSION => Ok(role),
        Some(Message::Hello { version, .. }) => Err(ControlError::Version(version)),
        _ => Err(ControlError::Malformed("expected Hello")),
    }
}

/// Removes a stale socket file at `path`; refuses to remove anything that is not a socket.
fn remove_stale(path: &Path) -> Result<(), FtError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| FtError::Bind {
                path: path.display().to_string(),
                source,
            })
        }
        Ok(_) => Err(FtError::Bind {
            path: path.display().to_string(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FtError::Bind {
            path: path.display().to_string(),
            source,
        }),
    }
}

impl FtServer {
    /// Binds `path` (replacing a stale socket file).
    pub fn bind(path: &Path, link: Arc<FtLink>) -> Result<FtServer, FtError> {
        remove_stale(path)?;
        let listener = UnixListener::bind(path).map_err(|source| FtError::Bind {
            path: path.display().to_string(),
            source,
        })?;
        Ok(FtServer {
            path: path.to_path_buf(),
            listener,
            link,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        })
    }

    /// Changes the handshake timeout (tests).
    pub fn with_handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// Serves connections on a thread of its own, forever.
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("ft-control".to_string())
            .spawn(move || self.run())
    }

    fn run(&self) {
        info!("FT control socket on {}", self.path.display());
        let mut serial: u64 = 0;
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) => {
                    error!("FT: accept failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            serial += 1;
            if let Err(e) = self.serve(stream, serial) {
                NetStats::inc(&self.link.stats.ft_bad_connections);
                error!("FT connection {serial}: dropped: {e}");
            }
        }
    }

    /// Serves one connection until it closes or misbehaves.
    fn serve(&self, mut stream: UnixStream, serial: u64) -> Result<(), FtError> {
        stream.set_read_timeout(Some(self.handshake_timeout))?;
        let role = read_hello(&mut stream)?;
        stream.set_read_timeout(None)?;
        self.link.attach(stream.try_clone()?, role, serial)?;
        let result = self.read_loop(&mut stream, serial);
        let why = match &result {
            Ok(()) => "closed by the VMM".to_string(),
            Err(e) => e.to_string(),
        };
        self.link.detach(serial, &why);
        result
    }

    fn read_loop(&self, stream: &mut UnixStream, serial: u64) -> Result<(), FtError> {
        loop {
            match Message::read_from(stream) {
                Ok(None) => return Ok(()),
                Ok(Some(Message::Release { id })) => self.link.release(serial, id),
                Ok(Some(Message::SetRole { role })) => self.link.set_role(serial, role),
                Ok(Some(other)) => return Err(FtError::Unexpected(format!("{other:?}"))),
                // The peer (or our own shutdown after a failed send) closed the socket in the
                // middle of a message: the connection is gone either way.
                Err(ControlError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    warn!("FT connection {serial}: closed in the middle of a message");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
