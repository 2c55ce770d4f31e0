//! A TCP connect that does not block the event loop: the socket is non-blocking, the loop
//! watches it for EPOLLOUT, and SO_ERROR tells the result (connect(2), "EINPROGRESS").

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A connection under way.
pub struct Connecting {
    socket: Socket,
    started: Instant,
}

impl Connecting {
    /// Starts connecting to `addr`.
    pub fn start(addr: SocketAddr) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        match socket.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(Connecting {
            socket,
            started: Instant::now(),
        })
    }

    pub fn older_than(&self, limit: Duration) -> bool {
        self.started.elapsed() > limit
    }

    /// After the loop reported the socket writable (or in error): whether it is connected
    /// (false: a spurious wake-up, keep waiting); an error if the connect failed.
    pub fn is_connected(&self) -> io::Result<bool> {
        if let Some(e) = self.socket.take_error()? {
            return Err(e);
        }
        match self.socket.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The connected socket as a blocking stream with TCP_NODELAY.
    pub fn into_stream(self) -> io::Result<TcpStream> {
        self.socket.set_nonblocking(false)?;
        self.socket.set_tcp_nodelay(true)?;
        Ok(self.socket.into())
    }

    /// The connected socket, still non-blocking (for an exchange driven by the loop).
    pub fn into_nonblocking_stream(self) -> io::Result<TcpStream> {
        self.socket.set_tcp_nodelay(true)?;
        Ok(self.socket.into())
    }
}

impl AsRawFd for Connecting {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}
