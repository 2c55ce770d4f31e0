//! A small blocking client, for the VMM's failover path and for tests.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

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
}

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connect; `timeout` bounds the connect and each reply (None = wait forever).
    pub fn connect(
        addr: impl ToSocketAddrs,
        timeout: Option<Duration>,
    ) -> Result<Self, ClientError> {
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
                    return Ok(Client {
                        writer: s.try_clone()?,
                        reader: BufReader::new(s),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last.into())
    }

    /// Send one raw line (a newline is added) and return the raw reply line.
    pub fn call_raw(&mut self, line: &str) -> Result<serde_json::Value, ClientError> {
        self.writer.write_all(format!("{line}\n").as_bytes())?;
        let mut reply = String::new();
        if self.reader.read_line(&mut reply)? == 0 {
            return Err(ClientError::Closed);
        }
        serde_json::from_str(&reply).map_err(|e| ClientError::BadReply(format!("{e}: {reply:?}")))
    }

    fn call(&mut self, req: &Request) -> Result<serde_json::Value, ClientError> {
        let line = serde_json::to_string(req).map_err(|e| ClientError::BadReply(e.to_string()))?;
        let v = self.call_raw(&line)?;
        if v["ok"] != true {
            return Err(ClientError::Refused(
                v["error"].as_str().unwrap_or("?").to_string(),
            ));
        }
        Ok(v)
    }

    /// Ask for the flag of (vm, epoch). Go live only if `granted`.
    pub fn test_and_set(
        &mut self,
        vm: &str,
        epoch: u64,
        owner: &str,
    ) -> Result<Decision, ClientError> {
        let req = Request::TestAndSet {
            vm: vm.into(),
            epoch,
            owner: owner.into(),
        };
        let v = self.call(&req)?;
        serde_json::from_value(v).map_err(|e| ClientError::BadReply(e.to_string()))
    }

    pub fn status(&mut self) -> Result<Vec<Flag>, ClientError> {
        let mut v = self.call(&Request::Status)?;
        serde_json::from_value(v["flags"].take()).map_err(|e| ClientError::BadReply(e.to_string()))
    }
}
