//! A blocking client of the control socket, for `ftctl` and the tests: each call waits at
//! most a timeout for its reply, and each failure says what to check.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Digest, Protecting, Request, Resumed, SnapshotWritten, Status};

/// How long a reply may take. A pause at a far landmark may need more (`--timeout-ms`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest reply line read (a status reply is about 1 KiB).
const MAX_REPLY: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no control socket at {0} (is a vmm running with --api-sock {0}?)")]
    NoSocket(PathBuf),
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the vmm did not answer within {0} ms")]
    Timeout(u128),
    #[error("the vmm closed the connection without an answer")]
    Closed,
    #[error("control socket: {0}")]
    Io(std::io::Error),
    #[error("the vmm sent a reply this client cannot read: {0}")]
    BadReply(String),
    /// `{"ok":false,"error":...}`.
    #[error("the vmm refused: {0}")]
    Refused(String),
}

pub struct Client {
    stream: BufReader<UnixStream>,
    timeout: Duration,
}

impl Client {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| match source.kind() {
            ErrorKind::NotFound => ClientError::NoSocket(path.into()),
            _ => ClientError::Connect {
                path: path.into(),
                source,
            },
        })?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(ClientError::Io)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(ClientError::Io)?;
        Ok(Client {
            stream: BufReader::new(stream),
            timeout,
        })
    }

    /// Sends `request` and returns the reply, `ok: true` checked.
    pub fn call(&mut self, request: &Request) -> Result<Value, ClientError> {
        let v = self.call_line(&request.to_line())?;
        if v["ok"] != true {
            let why = v["error"].as_str().unwrap_or("(no reason given)");
            return Err(ClientError::Refused(why.to_string()));
        }
        Ok(v)
    }

    /// Sends one raw request line (a newline is added; tests also send malformed ones) and
    /// returns the reply as JSON, `{"ok":false,...}` included.
    pub fn call_line(&mut self, request: &str) -> Result<Value, ClientError> {
        let ms = self.timeout.as_millis();
        let timed_out = |e: std::io::Error| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => ClientError::Timeout(ms),
            _ => ClientError::Io(e),
        };
        let line = format!("{request}\n");
        self.stream
            .get_mut()
            .write_all(line.as_bytes())
            .map_err(timed_out)?;
        let mut reply = Vec::new();
        let n = (&mut self.stream)
            .take(MAX_REPLY)
            .read_until(b'\n', &mut reply)
            .map_err(timed_out)?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        serde_json::from_slice(&reply).map_err(|e| {
            ClientError::BadReply(format!("{e}: {:?}", String::from_utf8_lossy(&reply)))
        })
    }

    /// `call`, with the reply read as `T`.
    pub fn call_typed<T: DeserializeOwned>(&mut self, request: &Request) -> Result<T, ClientError> {
        let v = self.call(request)?;
        serde_json::from_value(v).map_err(|e| ClientError::BadReply(e.to_string()))
    }

    pub fn status(&mut self) -> Result<Status, ClientError> {
        self.call_typed(&Request::Status)
    }

    /// Pauses at `landmark` (None: the current one); returns the status once paused.
    pub fn pause(&mut self, landmark: Option<u64>) -> Result<Status, ClientError> {
        self.call_typed(&Request::Pause { landmark })
    }

    pub fn resume(&mut self) -> Result<Resumed, ClientError> {
        self.call_typed(&Request::Resume)
    }

    /// Paused only.
    pub fn digest(&mut self) -> Result<Digest, ClientError> {
        self.call_typed(&Request::Digest)
    }

    pub fn protect(&mut self, peer: std::net::SocketAddr) -> Result<Protecting, ClientError> {
        self.call_typed(&Request::Protect { peer })
    }

    /// Paused only; `path` absolute and not existing.
    pub fn snapshot(&mut self, path: PathBuf) -> Result<SnapshotWritten, ClientError> {
        self.call_typed(&Request::Snapshot { path })
    }
}
