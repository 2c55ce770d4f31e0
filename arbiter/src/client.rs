//! A small blocking client, for the VMM's failover path and for tests.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use ft_tls::{PeerName, TlsDir, HANDSHAKE_TIMEOUT};

use crate::protocol::{Decision, Flag, Request};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("arbiter I/O: {0}")]
    Io(#[from] io::Error),
    #[error("arbiter closed the connection")]
    Closed,
    #[error("arbiter sent an unreadable reply: {0}")]
    BadReply(String),
    #[error("arbiter refused the request: {0}")]
    Refused(String),
    #[error("arbiter TLS: {0}")]
    Tls(#[from] ft_tls::TlsError),
}

/// The request line of a test-and-set (without its newline), for clients that do their own
/// I/O (the VMM asks from its event loop without blocking).
pub fn test_and_set_line(vm: &str, epoch: u64, owner: &str) -> Result<String, ClientError> {
    let req = Request::TestAndSet {
        vm: vm.into(),
        epoch,
        owner: owner.into(),
    };
    serde_json::to_string(&req).map_err(|e| ClientError::BadReply(e.to_string()))
}

/// The answer in a reply line: a decision, or the arbiter's error.
pub fn parse_decision(line: &str) -> Result<Decision, ClientError> {
    let v = parse_reply(line)?;
    serde_json::from_value(v).map_err(|e| ClientError::BadReply(e.to_string()))
}

/// A reply line as JSON; `ok: false` is the arbiter's refusal.
fn parse_reply(line: &str) -> Result<serde_json::Value, ClientError> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| ClientError::BadReply(format!("{e}: {line:?}")))?;
    if v["ok"] != true {
        return Err(ClientError::Refused(
            v["error"].as_str().unwrap_or("?").to_string(),
        ));
    }
    Ok(v)
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub struct Client {
    stream: BufReader<Box<dyn Stream>>,
}

fn connect_tcp(addr: impl ToSocketAddrs, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address");
    for a in addr.to_socket_addrs()? {
        let stream = match timeout {
            Some(t) => TcpStream::connect_timeout(&a, t),
            None => TcpStream::connect(a),
        };
        match stream {
            Ok(s) => {
                s.set_read_timeout(timeout)?;
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Client {
    /// Connect in clear TCP (an arbiter started with `--insecure`); `timeout` bounds the
    /// connect and each reply (None = wait forever).
    pub fn connect(
        addr: impl ToSocketAddrs,
        timeout: Option<Duration>,
    ) -> Result<Self, ClientError> {
        let tcp = connect_tcp(addr, timeout)?;
        Ok(Client {
            stream: BufReader::new(Box::new(tcp)),
        })
    }

    /// Connect with mutual TLS: this side's client certificate from `dir`, and the arbiter's
    /// certificate must name `arbiter`.
    pub fn connect_tls(
        addr: impl ToSocketAddrs,
        timeout: Option<Duration>,
        dir: &TlsDir,
        arbiter: &PeerName,
    ) -> Result<Self, ClientError> {
        let tcp = connect_tcp(addr, timeout)?;
        let same_socket = tcp.try_clone()?;
        let session = dir.connect(tcp, arbiter, timeout.unwrap_or(HANDSHAKE_TIMEOUT))?;
        // The handshake leaves the socket without a timeout; each reply has one again.
        same_socket.set_read_timeout(timeout)?;
        Ok(Client {
            stream: BufReader::new(Box::new(session.into_client_stream()?)),
        })
    }

    /// Send one raw line (a newline is added) and return the raw reply line.
    pub fn call_raw(&mut self, line: &str) -> Result<serde_json::Value, ClientError> {
        let reply = self.exchange(line)?;
        serde_json::from_str(&reply).map_err(|e| ClientError::BadReply(format!("{e}: {reply:?}")))
    }

    /// Sends `line` and returns the reply line, without its newline.
    fn exchange(&mut self, line: &str) -> Result<String, ClientError> {
        let writer = self.stream.get_mut();
        writer.write_all(format!("{line}\n").as_bytes())?;
        writer.flush()?;
        let mut reply = String::new();
        if self.stream.read_line(&mut reply)? == 0 {
            return Err(ClientError::Closed);
        }
        Ok(reply)
    }

    /// Ask for the flag of (vm, epoch). Go live only if `granted`.
    pub fn test_and_set(
        &mut self,
        vm: &str,
        epoch: u64,
        owner: &str,
    ) -> Result<Decision, ClientError> {
        let line = test_and_set_line(vm, epoch, owner)?;
        parse_decision(&self.exchange(&line)?)
    }

    pub fn status(&mut self) -> Result<Vec<Flag>, ClientError> {
        let line = serde_json::to_string(&Request::Status)
            .map_err(|e| ClientError::BadReply(e.to_string()))?;
        let mut v = parse_reply(&self.exchange(&line)?)?;
        serde_json::from_value(v["flags"].take()).map_err(|e| ClientError::BadReply(e.to_string()))
    }
}
