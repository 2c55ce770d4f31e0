//! The relay: one thread owns a TLS session and its TCP socket, and moves bytes between
//! them and one end of a Unix socket pair; the caller gets the other end, a plain byte
//! stream. The logging channel's reader, writer and watchdog share one socket through
//! clones of it, which a rustls session (one state machine, not thread-safe) cannot be;
//! with no kTLS here (CONFIG_TLS is not set on these kernels), a single owner fed by the
//! kernel's socket buffers is the simplest design that never holds a lock across a
//! blocking write.
//!
//! Both directions are bounded: at most BUF plaintext bytes wait for the local side, and
//! the local side is read only once rustls has sent everything it holds. A half-close
//! travels as one: local EOF becomes close_notify, close_notify becomes local EOF (once
//! what came before it is delivered). The peer's TCP EOF without close_notify also becomes
//! local EOF after what came before it (all of it authenticated), and so does a reset (a
//! process that dies with unread bytes in its socket resets it): nothing more goes to the
//! peer, and the relay ends once the local side has what was received. Any other error
//! (a bad record, a failed write to the local side) ends both at once, and plaintext not
//! yet delivered is dropped (never acknowledged by the local side, so nothing the peer
//! released depends on it).

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use rustls::Connection;

use crate::Session;

const BUF: usize = 256 << 10;
const CHUNK: usize = 64 << 10;

/// Run first on the relay thread (the VMM installs its seccomp filter there).
pub type RelayHook = Box<dyn FnOnce() + Send>;

impl Session {
    /// Starts the relay thread (named `name`) and returns the plain end.
    pub fn relay(self, name: &str, on_start: RelayHook) -> std::io::Result<UnixStream> {
        let (local, theirs) = UnixStream::pair()?;
        let mut conn = self.conn;
        // `read_app` reads at most CHUNK bytes, and only once the last ones are sent.
        conn.set_buffer_limit(None);
        self.tcp.set_nonblocking(true)?;
        theirs.set_nonblocking(true)?;
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                on_start();
                let mut relay = Relay {
                    conn,
                    tcp: self.tcp,
                    app: theirs,
                    to_app: Vec::new(),
                    app_eof: false,
                    peer_eof: false,
                    peer_reset: false,
                };
                if let Err(e) = relay.run() {
                    log::debug!("tls relay: {e}");
                }
                let _ = relay.tcp.shutdown(Shutdown::Both);
                let _ = relay.app.shutdown(Shutdown::Both);
            })?;
        Ok(local)
    }
}

struct Relay {
    conn: Connection,
    tcp: std::net::TcpStream,
    app: UnixStream,
    /// Plaintext from the peer that the local side has not taken yet.
    to_app: Vec<u8>,
    /// The local side will send no more (close_notify queued).
    app_eof: bool,
    /// The peer will send no more (local EOF given once `to_app` is empty).
    peer_eof: bool,
    /// The TCP connection was reset: nothing can be sent, and the socket is not polled
    /// (poll would report POLLERR on it at once, for ever).
    peer_reset: bool,
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

impl Relay {
    fn run(&mut self) -> std::io::Result<()> {
        let mut chunk = vec![0u8; CHUNK];
        loop {
            if self.app_eof && self.peer_eof && self.to_app.is_empty() && !self.conn.wants_write() {
                return Ok(());
            }
            if self.peer_reset && self.to_app.is_empty() {
                return Ok(());
            }
            self.wait()?;
            self.read_app(&mut chunk)?;
            self.send_peer()?;
            self.read_peer()?;
            self.deliver()?;
        }
    }

    /// poll(2) on both sockets for what can move now.
    fn wait(&self) -> std::io::Result<()> {
        let mut tcp = 0;
        if !self.peer_eof && self.to_app.len() < BUF {
            tcp |= libc::POLLIN;
        }
        if self.conn.wants_write() {
            tcp |= libc::POLLOUT;
        }
        let mut app = 0;
        if !self.app_eof && !self.conn.wants_write() && !self.peer_reset {
            app |= libc::POLLIN;
        }
        if !self.to_app.is_empty() {
            app |= libc::POLLOUT;
        }
        let mut fds = [
            libc::pollfd {
                // A negative fd is skipped by poll(2).
                fd: if self.peer_reset {
                    -1
                } else {
                    self.tcp.as_raw_fd()
                },
                events: tcp,
                revents: 0,
            },
            libc::pollfd {
                fd: self.app.as_raw_fd(),
                events: app,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    fn read_app(&mut self, chunk: &mut [u8]) -> std::io::Result<()> {
        if self.app_eof || self.conn.wants_write() || self.peer_reset {
            return Ok(());
        }
        match self.app.read(chunk) {
            Ok(0) => {
                self.app_eof = true;
                self.conn.send_close_notify();
            }
            // The writer takes all n bytes: `relay` lifted its buffer limit.
            Ok(n) => self.conn.writer().write_all(&chunk[..n])?,
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn send_peer(&mut self) -> std::io::Result<()> {
        while self.conn.wants_write() && !self.peer_reset {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if would_block(&e) => break,
                // Seen on a write first: what the socket still holds is read next
                // (`read_peer` runs until its EOF or reset), then the relay ends.
                Err(e)
                    if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) =>
                {
                    self.peer_reset = true;
                }
                Err(e) => return Err(e),
            }
        }
        if self.app_eof && !self.conn.wants_write() {
            let _ = self.tcp.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    fn read_peer(&mut self) -> std::io::Result<()> {
        while !self.peer_eof && self.to_app.len() < BUF {
            match self.conn.read_tls(&mut self.tcp) {
                Ok(0) => self.peer_eof = true,
                Ok(_) => {
                    self.conn
                        .process_new_packets()
                        .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
                }
                Err(e) if would_block(&e) => break,
                // What came before the reset was authenticated record by record.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    self.peer_eof = true;
                    self.peer_reset = true;
                    break;
                }
                Err(e) => return Err(e),
            }
            let mut reader = self.conn.reader();
            let mut buf = [0u8; 16 << 10];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => {
                        self.peer_eof = true;
                        break;
                    }
                    Ok(n) => self.to_app.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // A TCP EOF without close_notify (the peer's process died, say): every
                    // byte before it came in an authenticated record, so it is delivered,
                    // then the local side sees EOF, as it would on a bare TCP connection.
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                        self.peer_eof = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // Key updates and alerts the peer is owed.
        self.send_peer()
    }

    fn deliver(&mut self) -> std::io::Result<()> {
        while !self.to_app.is_empty() {
            match self.app.write(&self.to_app) {
                Ok(n) => {
                    self.to_app.drain(..n);
                }
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        if self.peer_eof && self.to_app.is_empty() {
            let _ = self.app.shutdown(Shutdown::Write);
        }
        Ok(())
    }
}
