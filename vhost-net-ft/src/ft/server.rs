//! The `--ft-socket` server: one VMM connection at a time, forever.
//!
//! The socket follows `ft_control::local` (mode 0600, or 0660 with `--socket-group`); new
//! connections wait for their first byte together (`ft_control::accept`), at most
//! [`HANDSHAKE_TIMEOUT`], so a silent client delays nobody. A connection is served only if
//! its process is the vhost-user frontend's (`SO_PEERCRED` pid, [`FrontendSlot::owned_by`]):
//! FT mode takes the completions and the TX frames of the guest's rings away from the plain
//! path, which only the VMM that owns those rings may ask for. It must start with `Hello`
//! (answered with `HelloAck`) within [`HANDSHAKE_TIMEOUT`]; then the VMM sends `Release` and
//! `SetRole` (`ft_control::inbound`: frames of at most 64 bytes, none may stall for more
//! than `FRAME_TIMEOUT`). The `Hello` is checked exactly as `ft_control::accept_hello` does,
//! but the answer is sent by [`FtLink::attach`] once the role is in force (see there).
//! Anything else — a bad handshake, an unknown, malformed or stalled message, a message only
//! the backend sends — drops that connection with a logged error (the link goes back to
//! plain mode; held outputs are discarded, never sent), and the next connection is
//! accepted. A refused connection changes nothing. The backend itself never stops because of
//! the VMM.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ft_control::accept::{self, AcceptRules, Accepted};
use ft_control::inbound::{self, FRAME_TIMEOUT};
use ft_control::{local, ControlError, Message};
use log::{error, info, warn};
use vhost_user_guard::FrontendSlot;

use crate::error::FtError;
use crate::ft::link::FtLink;
use crate::net::stats::NetStats;

/// How long a new connection may take to send its first byte, and then its `Hello` (a
/// silent client must not block the next one).
pub const HANDSHAKE_TIMEOUT: Duration = ft_control::inbound::HELLO_TIMEOUT;
/// How many connections may wait to be served (the acceptor closes more).
const MAX_WAITING: usize = 16;

/// A bound FT control socket.
pub struct FtServer {
    path: PathBuf,
    listener: UnixListener,
    link: Arc<FtLink>,
    frontend: Arc<FrontendSlot>,
    group: Option<u32>,
    handshake_timeout: Duration,
}

impl FtServer {
    /// Binds `path` (see the module documentation); `frontend` names the vhost-user
    /// frontend's process, `group` is `--socket-group`.
    pub fn bind(
        path: &Path,
        link: Arc<FtLink>,
        frontend: Arc<FrontendSlot>,
        group: Option<u32>,
    ) -> Result<FtServer, FtError> {
        let listener = local::bind(path, group).map_err(|source| FtError::Bind {
            path: path.display().to_string(),
            source,
        })?;
        Ok(FtServer {
            path: path.to_path_buf(),
            listener,
            link,
            frontend,
            group,
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
        let rules = AcceptRules {
            what: "FT control",
            first_message: self.handshake_timeout,
            max_waiting: MAX_WAITING,
            group: self.group,
        };
        let accepted = accept::spawn(self.listener.try_clone()?, rules)?;
        thread::Builder::new()
            .name("ft-control".to_string())
            .spawn(move || self.run(&accepted))
    }

    fn run(&self, accepted: &Receiver<Accepted>) {
        info!("FT control socket on {}", self.path.display());
        let mut serial: u64 = 0;
        for Accepted { stream, peer } in accepted {
            serial += 1;
            let served = match self.frontend.owned_by(&peer) {
                Ok(()) => self.serve(stream, serial),
                Err(e) => Err(FtError::NotTheFrontend(e)),
            };
            if let Err(e) = served {
                NetStats::inc(&self.link.stats.ft_bad_connections);
                error!("FT connection {serial}: dropped: {e}");
            }
        }
        error!("FT: the accepting thread is gone; no more FT connections");
    }

    /// Serves one connection until it closes or misbehaves.
    fn serve(&self, mut stream: UnixStream, serial: u64) -> Result<(), FtError> {
        stream.set_read_timeout(Some(self.handshake_timeout))?;
        let role = inbound::read_hello(&mut stream)?;
        stream.set_read_timeout(Some(FRAME_TIMEOUT))?;
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
            match inbound::read_vmm_message(stream) {
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
