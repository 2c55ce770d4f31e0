//! The logging channel's byte stream and how it is secured.
//!
//! With `--ft-tls-dir` every connection between the hosts starts with a mutual TLS 1.3
//! handshake (ft-tls): the peer's certificate must chain to the directory's CA and name the
//! expected peer (`--ft-peer-name`, else the peer's IP address). The channel then runs over
//! the plain end of the session's relay thread. `--ft-insecure` keeps the bare TCP socket
//! (and says so in the log and the status).

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ft_tls::{PeerName, TlsDir, TlsError, HANDSHAKE_TIMEOUT};

use crate::inbox::{DeviceEvent, Inbox};
use crate::seccomp::{self, ThreadKind};

/// A logging-channel connection: the TCP socket itself, or the plain end of a TLS relay.
#[derive(Debug)]
pub enum LinkStream {
    Tcp(TcpStream),
    Tls(UnixStream),
}

impl LinkStream {
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            LinkStream::Tcp(s) => LinkStream::Tcp(s.try_clone()?),
            LinkStream::Tls(s) => LinkStream::Tls(s.try_clone()?),
        })
    }

    /// Ends the connection (for TLS: the relay sees it and closes the TCP socket).
    pub fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self {
            LinkStream::Tcp(s) => s.shutdown(how),
            LinkStream::Tls(s) => s.shutdown(how),
        }
    }

    /// TCP_NODELAY (the relay sets it on its own socket).
    pub fn set_nodelay(&self, on: bool) -> std::io::Result<()> {
        match self {
            LinkStream::Tcp(s) => s.set_nodelay(on),
            LinkStream::Tls(_) => Ok(()),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            LinkStream::Tcp(s) => s.set_write_timeout(t),
            LinkStream::Tls(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for LinkStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            LinkStream::Tcp(s) => s.read(buf),
            LinkStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for LinkStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            LinkStream::Tcp(s) => s.write(buf),
            LinkStream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for LinkStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            LinkStream::Tcp(s) => s.as_raw_fd(),
            LinkStream::Tls(s) => s.as_raw_fd(),
        }
    }
}

/// How connections between the hosts are secured, loaded at startup (before the seccomp
/// filters, which open no files).
#[derive(Clone, Debug, Default)]
pub enum LinkSecurity {
    /// `--ft-insecure`: bare TCP (and the default of unit tests, which build configs).
    #[default]
    Insecure,
    Tls {
        dir: TlsDir,
        /// `--ft-peer-name`; None: the peer's IP address.
        peer_name: Option<PeerName>,
    },
}

impl PartialEq for LinkSecurity {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (LinkSecurity::Insecure, LinkSecurity::Insecure) => true,
            (
                LinkSecurity::Tls { dir, peer_name },
                LinkSecurity::Tls {
                    dir: d,
                    peer_name: p,
                },
            ) => dir.path == d.path && peer_name == p,
            _ => false,
        }
    }
}
impl Eq for LinkSecurity {}

fn relay_hook() -> ft_tls::RelayHook {
    Box::new(|| seccomp::enter(ThreadKind::TlsRelay))
}

impl LinkSecurity {
    pub fn is_tls(&self) -> bool {
        matches!(self, LinkSecurity::Tls { .. })
    }

    fn expected(peer_name: &Option<PeerName>, ip: IpAddr) -> PeerName {
        peer_name.clone().unwrap_or_else(|| PeerName::ip(ip))
    }

    /// The backup's side: `expected_ip` is its `--peer` (used when no `--ft-peer-name`).
    pub fn accept(
        &self,
        tcp: TcpStream,
        expected_ip: Option<IpAddr>,
    ) -> Result<LinkStream, TlsError> {
        match self {
            LinkSecurity::Insecure => Ok(LinkStream::Tcp(tcp)),
            LinkSecurity::Tls { dir, peer_name } => {
                let expected = match (peer_name, expected_ip) {
                    (Some(name), _) => name.clone(),
                    (None, Some(ip)) => PeerName::ip(ip),
                    // main refuses this configuration at startup; never accept just anyone.
                    (None, None) => return Err(TlsError::Config(
                        "no --ft-peer-name and no --peer: whose certificate to accept is not known"
                            .into(),
                    )),
                };
                tcp.set_nodelay(true)?;
                let session = dir.accept(tcp, &expected, HANDSHAKE_TIMEOUT)?;
                Ok(LinkStream::Tls(
                    session.relay("ft-tls-relay", relay_hook())?,
                ))
            }
        }
    }

    /// The primary's side, on a connection to the backup at `peer`.
    pub fn connect(&self, tcp: TcpStream, peer: SocketAddr) -> Result<LinkStream, TlsError> {
        match self {
            LinkSecurity::Insecure => Ok(LinkStream::Tcp(tcp)),
            LinkSecurity::Tls { dir, peer_name } => {
                tcp.set_nodelay(true)?;
                let want = Self::expected(peer_name, peer.ip());
                let session = dir.connect(tcp, &want, HANDSHAKE_TIMEOUT)?;
                Ok(LinkStream::Tls(
                    session.relay("ft-tls-relay", relay_hook())?,
                ))
            }
        }
    }
}

/// A connection the joiner made, for the handshake thread.
pub struct Dialled {
    pub tcp: TcpStream,
    pub peer: SocketAddr,
    /// Set again if the handshake fails, so that the joiner tries again.
    pub wanted: Arc<AtomicBool>,
    pub inbox: Arc<Inbox>,
}

/// The primary's handshake thread: the joiner (on the event loop, which must not block)
/// hands it each connection; a good one goes to the vCPU thread as `BackupConnected`.
/// Started at setup, so that its filter may allow spawning the relay threads while the
/// event loop's does not.
pub fn handshake_thread(security: LinkSecurity) -> std::io::Result<mpsc::Sender<Dialled>> {
    let (tx, rx) = mpsc::channel::<Dialled>();
    // The joiner retries every 200 ms: each distinct failure is said once.
    let mut last_error = String::new();
    std::thread::Builder::new()
        .name("ft-tls-connect".into())
        .spawn(move || {
            seccomp::enter(ThreadKind::TlsHandshake);
            for d in rx {
                match security.connect(d.tcp, d.peer) {
                    Ok(link) => {
                        last_error.clear();
                        log::warn!("ft: TLS session with the backup at {} established", d.peer);
                        d.inbox.post(DeviceEvent::BackupConnected(link));
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if last_error != msg {
                            log::error!("ft: TLS handshake with the backup at {} failed: {msg}; no guest state was sent", d.peer);
                            last_error = msg;
                        }
                        d.wanted.store(true, Ordering::SeqCst);
                    }
                }
            }
        })?;
    Ok(tx)
}
