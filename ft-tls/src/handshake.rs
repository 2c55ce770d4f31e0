//! The handshake on a blocking socket, bounded by a deadline: a peer that sends nothing, or
//! trickles, or presents the wrong certificate, costs the caller at most HANDSHAKE_TIMEOUT.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::{ClientConnection, Connection, ServerConnection};

use crate::{PeerName, TlsDir, TlsError};

/// Long enough for a loaded host (two round trips and two signatures), short enough that a
/// silent peer does not hold a waiting backup for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// A TLS session whose handshake is complete and whose peer is the expected one.
pub struct Session {
    pub(crate) conn: Connection,
    pub(crate) tcp: TcpStream,
}

impl TlsDir {
    /// As the side that connects: the server must present a certificate for `peer`.
    pub fn connect(
        &self,
        tcp: TcpStream,
        peer: &PeerName,
        timeout: Duration,
    ) -> Result<Session, TlsError> {
        let conn = ClientConnection::new(self.client()?, peer.server_name())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Session::finish(Connection::Client(conn), tcp, timeout)
    }

    /// As the side that listens: the client must present a certificate for `peer`.
    pub fn accept(
        &self,
        tcp: TcpStream,
        peer: &PeerName,
        timeout: Duration,
    ) -> Result<Session, TlsError> {
        let conn =
            ServerConnection::new(self.server()?).map_err(|e| TlsError::Config(e.to_string()))?;
        let session = Session::finish(Connection::Server(conn), tcp, timeout)?;
        peer.check(session.peer_certificate()?)?;
        Ok(session)
    }
}

impl Session {
    fn finish(
        mut conn: Connection,
        mut tcp: TcpStream,
        timeout: Duration,
    ) -> Result<Self, TlsError> {
        let deadline = Instant::now() + timeout;
        let timed_out = || TlsError::Timeout(timeout.as_millis());
        while conn.is_handshaking() || conn.wants_write() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(timed_out)?;
            tcp.set_read_timeout(Some(left))?;
            tcp.set_write_timeout(Some(left))?;
            match conn.complete_io(&mut tcp) {
                Ok((0, 0)) if conn.is_handshaking() => {
                    return Err(TlsError::Handshake("the peer closed the connection".into()))
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(timed_out())
                }
                Err(e) => return Err(TlsError::Handshake(e.to_string())),
            }
        }
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        Ok(Session { conn, tcp })
    }

    /// A client session as a blocking stream, for a simple request-and-reply client on one
    /// thread (the arbiter's client in tests and tools); no relay thread.
    pub fn into_client_stream(self) -> Result<impl Read + Write + Send, TlsError> {
        match self.conn {
            Connection::Client(c) => Ok(rustls::StreamOwned::new(c, self.tcp)),
            Connection::Server(_) => Err(TlsError::Config("not a client session".into())),
        }
    }

    fn peer_certificate(&self) -> Result<&CertificateDer<'static>, TlsError> {
        self.conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| TlsError::Handshake("the peer sent no certificate".into()))
    }
}
