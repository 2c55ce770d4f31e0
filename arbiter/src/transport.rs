//! A client connection's byte stream: clear TCP (`serve --insecure`) or a mutual-TLS session
//! (`serve --tls-dir DIR`), and who the client is.
//!
//! Over TLS a client is the name its certificate carries (it chains to the CA: rustls
//! checked that in the handshake), and a test-and-set is granted only to that name
//! (docs/PROTOCOL.md, "Arbiter"). Over clear TCP anyone may claim any name.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};

use ft_tls::{CertificateDer, NonBlocking, PeerName, TlsDir, TlsError};

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<NonBlocking>),
}

/// Who sent a request.
pub enum Who<'a> {
    /// Clear TCP: unauthenticated, any owner is taken as given.
    Anyone,
    /// The client's certificate (its chain to the CA already verified).
    Cert(&'a CertificateDer<'static>),
    /// A TLS session whose client has not shown a certificate (cannot send requests yet;
    /// here only to be refused if it somehow did).
    Unknown,
}

impl Who<'_> {
    /// Whether `owner` may be claimed by this client.
    pub fn may_claim(&self, owner: &str) -> Result<(), String> {
        match self {
            Who::Anyone => Ok(()),
            Who::Unknown => Err("no client certificate".into()),
            Who::Cert(cert) => PeerName::parse(owner)
                .and_then(|name| name.check(cert))
                .map_err(|_| format!("owner {owner:?} is not a name in your certificate; refused")),
        }
    }
}

impl Transport {
    /// The server's side, on an accepted socket: clear TCP, or TLS with the server's
    /// certificate from `tls`.
    pub fn new(tcp: TcpStream, tls: Option<&TlsDir>) -> io::Result<Self> {
        Self::over(tcp, tls.map(|dir| move |t| dir.accept_nonblocking(t)))
    }

    /// A client's side, on a connected socket: clear TCP, or TLS with this side's client
    /// certificate from `dir` and the server's certificate required to name `server`.
    pub fn client(tcp: TcpStream, tls: Option<(&TlsDir, &PeerName)>) -> io::Result<Self> {
        Self::over(
            tcp,
            tls.map(|(dir, server)| move |t| dir.connect_nonblocking(t, server)),
        )
    }

    /// Non-blocking and without Nagle either way; `session` starts TLS on the socket
    /// (`NonBlocking` makes it non-blocking itself).
    fn over(
        tcp: TcpStream,
        session: Option<impl FnOnce(TcpStream) -> Result<NonBlocking, TlsError>>,
    ) -> io::Result<Self> {
        tcp.set_nodelay(true)?;
        match session {
            None => {
                tcp.set_nonblocking(true)?;
                Ok(Transport::Plain(tcp))
            }
            Some(start) => Ok(Transport::Tls(Box::new(
                start(tcp).map_err(io::Error::other)?,
            ))),
        }
    }

    pub fn fd(&self) -> RawFd {
        match self {
            Transport::Plain(s) => s.as_raw_fd(),
            Transport::Tls(s) => s.socket().as_raw_fd(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// TLS records (handshake, replies, alerts) wait for the socket.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(s) => s.interest().1,
        }
    }

    /// Decrypted request bytes wait in the session (see `NonBlocking::has_plaintext`).
    pub fn has_plaintext(&mut self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(s) => s.has_plaintext(),
        }
    }

    pub fn who(&self) -> Who<'_> {
        match self {
            Transport::Plain(_) => Who::Anyone,
            Transport::Tls(s) if s.is_handshaking() => Who::Unknown,
            Transport::Tls(s) => s.peer_certificate().map_or(Who::Unknown, Who::Cert),
        }
    }

    /// Ends a TLS session with close_notify (best effort); nothing for clear TCP.
    pub fn close(&mut self) {
        if let Transport::Tls(s) = self {
            s.close();
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(s) => s.flush_tls(),
        }
    }
}
