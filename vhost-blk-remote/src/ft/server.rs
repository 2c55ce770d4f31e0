//! The `--ft-socket` server: one VMM connection at a time, on its own thread.
//!
//! The socket follows `ft_control::local` (mode 0600, or 0660 with `--socket-group`), and
//! new connections wait for their first byte together (`ft_control::accept`), at most
//! `HELLO_TIMEOUT` (2 s). A connection is served only if its process is the vhost-user
//! frontend's (`SO_PEERCRED` pid = the frontend's, [`FrontendSlot::owned_by`]): FT mode
//! takes the backend's writes away from the guest's rings, which only the VMM that owns
//! those rings may ask for. It starts with the `Hello`/`HelloAck` handshake
//! (`ft_control::accept_hello`, within `HELLO_TIMEOUT`), then carries `Release` and
//! `SetRole` from the VMM (`ft_control::inbound`: frames of at most 64 bytes, none may
//! stall for more than `FRAME_TIMEOUT`). Anything else, a bad handshake, a malformed or
//! stalled frame or an I/O error drops that connection (logged); its end puts the backend
//! back into plain mode, discarding the outputs still held (see [`super`]), and the next
//! connection is accepted. A refused connection changes nothing. Nothing a peer sends on
//! this socket can stop the backend.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use ft_control::accept::{self, AcceptRules, Accepted};
use ft_control::inbound::{self, FRAME_TIMEOUT, HELLO_TIMEOUT};
use ft_control::local::{self, SocketError};
use ft_control::{ControlError, Message};
use vhost_user_guard::FrontendSlot;

use super::Ft;

/// How many connections may wait to be served (the acceptor closes more).
const MAX_WAITING: usize = 16;

/// Errors that prevent the FT server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on FT socket {path}: {source}")]
    Bind { path: PathBuf, source: SocketError },
    #[error("cannot start the FT server thread: {0}")]
    Spawn(io::Error),
}

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("handshake failed: {0}")]
    Handshake(ControlError),
    #[error("{0}")]
    Control(#[from] ControlError),
    #[error("unexpected {0} message from the VMM")]
    Unexpected(&'static str),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Binds `path` (see the module documentation) and serves VMM connections on a thread;
/// `frontend` names the vhost-user frontend's process.
pub fn spawn(
    path: &Path,
    ft: Arc<Ft>,
    frontend: Arc<FrontendSlot>,
    group: Option<u32>,
) -> Result<JoinHandle<()>, ServerError> {
    let listener = local::bind(path, group).map_err(|source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    let rules = AcceptRules {
        what: "FT control",
        first_message: HELLO_TIMEOUT,
        max_waiting: MAX_WAITING,
        group,
    };
    let accepted = accept::spawn(listener, rules).map_err(ServerError::Spawn)?;
    log::info!("FT control socket: {}", path.display());
    thread::Builder::new()
        .name("ft-server".into())
        .spawn(move || accept_loop(&accepted, &ft, &frontend))
        .map_err(ServerError::Spawn)
}

fn accept_loop(accepted: &Receiver<Accepted>, ft: &Ft, frontend: &FrontendSlot) {
    for Accepted { stream, peer } in accepted {
        if let Err(e) = frontend.owned_by(&peer) {
            log::error!(
                "FT connection refused: {e}; FT mode is only for the process that owns the \
                 vhost-user connection"
            );
            continue;
        }
        let why = match serve(&stream, ft) {
            Ok(()) => {
                log::info!("FT connection closed by the VMM");
                "closed by the VMM".to_string()
            }
            Err(e) => {
                log::error!("FT connection dropped: {e}");
                e.to_string()
            }
        };
        // Whatever happened, this VMM is gone: plain mode, held outputs discarded.
        ft.disconnected(&why);
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    log::error!("FT socket: the accepting thread is gone; no more FT connections");
}

/// The stream as seen by `accept_hello`: reads go to the socket, the answer is kept back
/// until the backend has switched mode (see [`Ft::connected`]).
struct HeldAck<'a> {
    stream: &'a UnixStream,
    ack: Vec<u8>,
}

impl Read for HeldAck<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.stream).read(buf)
    }
}

impl Write for HeldAck<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ack.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs one connection until it ends.
fn serve(stream: &UnixStream, ft: &Ft) -> Result<(), ConnError> {
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let mut hs = HeldAck {
        stream,
        ack: Vec::new(),
    };
    let role = ft_control::accept_hello(&mut hs).map_err(ConnError::Handshake)?;
    stream.set_read_timeout(Some(FRAME_TIMEOUT))?;
    log::info!("FT connection from a VMM, role {role:?}");
    ft.connected(stream.try_clone()?, role, &hs.ack)?;
    let mut s: &UnixStream = stream;
    loop {
        match inbound::read_vmm_message(&mut s)? {
            None => return Ok(()),
            Some(Message::Release { id }) => ft.release(id),
            Some(Message::SetRole { role }) => ft.set_role(role),
            Some(other) => return Err(ConnError::Unexpected(name(&other))),
        }
    }
}

/// The name of a message, for logs (never its payload, which may be megabytes).
fn name(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "Hello",
        Message::HelloAck { .. } => "HelloAck",
        Message::Completion { .. } => "Completion",
        Message::OutputReady { .. } => "OutputReady",
        Message::Release { .. } => "Release",
        Message::SetRole { .. } => "SetRole",
    }
}
