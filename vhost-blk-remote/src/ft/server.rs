//! The `--ft-socket` server: one VMM connection at a time, on its own thread.
//!
//! A connection starts with the `Hello`/`HelloAck` handshake (`ft_control::accept_hello`),
//! then carries `Release` and `SetRole` from the VMM. Anything else, a bad handshake, a
//! malformed frame or an I/O error drops that connection (logged); its end puts the backend
//! back into plain mode, discarding the outputs still held (see [`super`]), and the next
//! connection is accepted. Nothing a peer sends on this socket can stop the backend.

use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ft_control::{ControlError, Message};

use super::Ft;

/// How long a new connection may take to send its `Hello` (a peer that connects and says
/// nothing must not block the next VMM forever).
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors that prevent the FT server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on FT socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
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

/// Binds `path` (replacing a stale socket file) and serves VMM connections on a thread.
pub fn spawn(path: &Path, ft: Arc<Ft>) -> Result<JoinHandle<()>, ServerError> {
    let bind_err = |source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(bind_err)?,
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    log::info!("FT control socket: {}", path.display());
    thread::Builder::new()
        .name("ft-server".into())
        .spawn(move || accept_loop(listener, ft))
        .map_err(ServerError::Spawn)
}

fn accept_loop(listener: UnixListener, ft: Arc<Ft>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let why = match serve(&stream, &ft) {
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
            Err(e) => {
                log::error!("FT socket: accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
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
    stream.set_read_timeout(None)?;
    log::info!("FT connection from a VMM, role {role:?}");
    ft.connected(stream.try_clone()?, role, &hs.ack)?;
    let mut s: &UnixStream = stream;
    loop {
        match Message::read_from(&mut s)? {
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
