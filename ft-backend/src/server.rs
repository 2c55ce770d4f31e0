//! The `--ft-socket` server: one VMM connection at a time, forever, on a thread of its own.
//!
//! The socket follows `ft_control::local` (mode 0600, or 0660 with `--socket-group`; a stale
//! socket file is replaced, anything else is refused). New connections wait for their first
//! byte together (`ft_control::accept`), at most the handshake timeout, so a silent client
//! delays nobody. A connection is served only if its process is the vhost-user frontend's
//! (`SO_PEERCRED` pid, [`FrontendSlot::owned_by`]): FT mode takes the completions and the
//! outputs of the guest's rings away from the plain path, which only the VMM that owns those
//! rings may ask for.
//!
//! It must start with `Hello` within the handshake timeout. The server checks it exactly as
//! `ft_control::accept_hello` does, but the answer is sent by the backend
//! ([`FtBackend::attach`], [`VmmConn::greet`]) once the role is in force. Then the VMM sends
//! `Release` and `SetRole` (`ft_control::inbound`: frames of at most 64 bytes, none may stall
//! for more than `FRAME_TIMEOUT`). Anything else (a bad handshake, an unknown, malformed or
//! stalled message, a message only a backend sends) drops that connection with a logged
//! error; its end puts the backend back into plain mode with held outputs discarded
//! ([`FtBackend::detach`]), and the next connection is accepted. A refused connection
//! changes nothing. Nothing a peer sends here can stop the backend.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ft_control::accept::{self, AcceptRules, Accepted};
use ft_control::inbound::{self, FRAME_TIMEOUT, HELLO_TIMEOUT};
use ft_control::local::{self, SocketError};
use ft_control::{ControlError, Message, Role};
use log::{error, info, warn};
use vhost_user_guard::{FrontendSlot, NotTheFrontend};

use crate::conn::VmmConn;

/// How many connections may wait to be served (the acceptor closes more).
const MAX_WAITING: usize = 16;

/// What a backend does with the VMM's messages. Every call comes from the server thread;
/// `serial` names the connection, so that a late message of a replaced connection is
/// ignored.
pub trait FtBackend: Send + Sync + 'static {
    /// A VMM said `Hello` asking for `role`. The backend replaces the connection it had, if
    /// any (its held outputs are discarded), puts `role` in force, and only then answers
    /// with [`VmmConn::greet`], under the same lock; it keeps `conn` for its messages.
    fn attach(&self, conn: VmmConn, role: Role) -> Result<(), ControlError>;
    /// `Release { id }`: outputs up to `id` may leave.
    fn release(&self, serial: u64, id: u64);
    /// `SetRole`: `Live` lets every held output leave at once (the VMM won the arbiter).
    fn set_role(&self, serial: u64, role: Role);
    /// Connection `serial` ended (`why`); if it is still the attached one: plain mode, held
    /// outputs discarded, never sent.
    fn detach(&self, serial: u64, why: &str);
    /// A connection was refused or dropped for misbehaving (for the backend's counters).
    fn bad_connection(&self) {}
}

/// Errors that prevent the FT server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on FT socket {path}: {source}")]
    Bind { path: PathBuf, source: SocketError },
    #[error("cannot start the FT server thread: {0}")]
    Spawn(io::Error),
}

/// Why one connection was refused or ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("refused: {0}; FT mode is only for the process that owns the vhost-user connection")]
    NotTheFrontend(NotTheFrontend),
    #[error("handshake failed: {0}")]
    Handshake(ControlError),
    #[error("{0}")]
    Control(#[from] ControlError),
    #[error("unexpected {0} message from the VMM")]
    Unexpected(&'static str),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A bound FT control socket.
pub struct FtServer<B: FtBackend> {
    path: PathBuf,
    listener: UnixListener,
    backend: Arc<B>,
    frontend: Arc<FrontendSlot>,
    group: Option<u32>,
    handshake_timeout: Duration,
}

impl<B: FtBackend> FtServer<B> {
    /// Binds `path` (see the module documentation); `frontend` names the vhost-user
    /// frontend's process, `group` is `--socket-group`.
    pub fn bind(
        path: &Path,
        backend: Arc<B>,
        frontend: Arc<FrontendSlot>,
        group: Option<u32>,
    ) -> Result<Self, ServerError> {
        let listener = local::bind(path, group).map_err(|source| ServerError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(FtServer {
            path: path.to_path_buf(),
            listener,
            backend,
            frontend,
            group,
            handshake_timeout: HELLO_TIMEOUT,
        })
    }

    /// Changes the handshake timeout (tests).
    pub fn with_handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// Serves connections on a thread of its own, forever.
    pub fn spawn(self) -> Result<JoinHandle<()>, ServerError> {
        let rules = AcceptRules {
            what: "FT control",
            first_message: self.handshake_timeout,
            max_waiting: MAX_WAITING,
            group: self.group,
        };
        let listener = self.listener.try_clone().map_err(ServerError::Spawn)?;
        let accepted = accept::spawn(listener, rules).map_err(ServerError::Spawn)?;
        thread::Builder::new()
            .name("ft-control".to_string())
            .spawn(move || self.run(&accepted))
            .map_err(ServerError::Spawn)
    }

    fn run(&self, accepted: &Receiver<Accepted>) {
        info!("FT control socket on {}", self.path.display());
        let mut serial: u64 = 0;
        for Accepted { stream, peer } in accepted {
            serial += 1;
            let served = match self.frontend.owned_by(&peer) {
                Ok(()) => self.serve(stream, serial),
                Err(e) => Err(ConnError::NotTheFrontend(e)),
            };
            if let Err(e) = served {
                self.backend.bad_connection();
                error!("FT connection {serial}: dropped: {e}");
            }
        }
        error!("FT: the accepting thread is gone; no more FT connections");
    }

    /// Serves one connection until it closes or misbehaves.
    fn serve(&self, mut stream: UnixStream, serial: u64) -> Result<(), ConnError> {
        stream.set_read_timeout(Some(self.handshake_timeout))?;
        let role = inbound::read_hello(&mut stream).map_err(ConnError::Handshake)?;
        stream.set_read_timeout(Some(FRAME_TIMEOUT))?;
        self.backend
            .attach(VmmConn::new(stream.try_clone()?, serial)?, role)?;
        info!("FT connection {serial}: attached, role {role:?}");
        let result = self.read_loop(&mut stream, serial);
        let why = match &result {
            Ok(()) => "closed by the VMM".to_string(),
            Err(e) => e.to_string(),
        };
        self.backend.detach(serial, &why);
        result
    }

    fn read_loop(&self, stream: &mut UnixStream, serial: u64) -> Result<(), ConnError> {
        loop {
            match inbound::read_vmm_message(stream) {
                Ok(None) => return Ok(()),
                Ok(Some(Message::Release { id })) => self.backend.release(serial, id),
                Ok(Some(Message::SetRole { role })) => self.backend.set_role(serial, role),
                Ok(Some(other)) => return Err(ConnError::Unexpected(other.name())),
                // The peer (or the backend's own shutdown after a failed send, or its
                // replacement by a new connection) closed the socket in the middle of a
                // message: the connection is gone either way.
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
