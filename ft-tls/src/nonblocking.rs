//! A TLS session on a non-blocking socket, for poll loops that serve many peers on one
//! thread (the arbiter) or must never block (the VMM's event loop): `read` and `write` behave
//! like a non-blocking socket's (WouldBlock when nothing can move), and `interest` says
//! which poll events the session waits for.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConnection, Connection, ServerConnection};

use crate::{PeerName, TlsDir, TlsError};

pub struct NonBlocking {
    conn: Connection,
    tcp: TcpStream,
    eof: bool,
}

impl TlsDir {
    /// The server side of a session on an accepted, non-blocking socket.
    pub fn accept_nonblocking(&self, tcp: TcpStream) -> Result<NonBlocking, TlsError> {
        let conn =
            ServerConnection::new(self.server()?).map_err(|e| TlsError::Config(e.to_string()))?;
        NonBlocking::new(Connection::Server(conn), tcp)
    }

    /// The client side of a session on a connected, non-blocking socket.
    pub fn connect_nonblocking(
        &self,
        tcp: TcpStream,
        peer: &PeerName,
    ) -> Result<NonBlocking, TlsError> {
        let conn = ClientConnection::new(self.client()?, peer.server_name())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        NonBlocking::new(Connection::Client(conn), tcp)
    }
}

fn blocked(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

impl NonBlocking {
    fn new(conn: Connection, tcp: TcpStream) -> Result<Self, TlsError> {
        tcp.set_nonblocking(true)?;
        Ok(NonBlocking {
            conn,
            tcp,
            eof: false,
        })
    }

    pub fn socket(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The peer's certificate, once the handshake is over.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.conn.peer_certificates().and_then(|c| c.first())
    }

    /// Whether decrypted bytes wait in the session. They came with TLS records read before,
    /// so the socket need not be readable: a poll loop that stopped reading early (a cap on
    /// reads per wake-up, a full reply queue) must read again without waiting for it.
    pub fn has_plaintext(&mut self) -> bool {
        self.conn
            .process_new_packets()
            .is_ok_and(|s| s.plaintext_bytes_to_read() > 0)
    }

    /// (wants POLLIN, wants POLLOUT).
    pub fn interest(&self) -> (bool, bool) {
        (!self.eof, self.conn.wants_write())
    }

    /// Sends what rustls holds, as far as the socket takes it.
    pub fn flush_tls(&mut self) -> std::io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if blocked(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Ends the session with close_notify (best effort).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush_tls();
    }
}

impl Read for NonBlocking {
    /// Plaintext, Ok(0) at the end (close_notify or TCP EOF), WouldBlock if none yet.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            match self.conn.read_tls(&mut self.tcp) {
                Ok(0) => self.eof = true,
                Ok(_) => {
                    self.conn
                        .process_new_packets()
                        .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
                    // Handshake messages and alerts the peer is owed.
                    self.flush_tls()?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for NonBlocking {
    /// Takes plaintext into the session (rustls buffers it until the handshake is over).
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        self.flush_tls()?;
        if n == 0 && !buf.is_empty() {
            // rustls's send buffer is full: like a full socket, not a closed one.
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_tls()
    }
}
