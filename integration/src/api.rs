//! A client of the vmm's control socket (JSON lines; docs/PROTOCOL.md, "Control socket"):
//! the typed requests and replies of `vmm_api`, which the vmm's server and `ftctl` use too,
//! and raw lines for the tests that send malformed ones.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use vmm_api::{Client, ClientError, Digest, Protecting, Resumed, Status};

/// Longer than the vmm's own wait for its vCPU thread (120 s, vmm/src/api.rs), so that the
/// vmm's answer, even "the vCPU did not answer", always arrives first.
const REPLY_TIMEOUT: Duration = Duration::from_secs(150);

/// `vmm_api::Client`, connected with retries. The typed calls return the reply types (a
/// refusal is an error); `call` takes a raw line and returns any reply, refusals included.
pub struct ApiClient(Client);

/// A raw reply (of `call`): `{"ok":...}` and whatever else came.
#[derive(Clone, Debug)]
pub struct ApiReply(pub serde_json::Value);

impl ApiReply {
    pub fn ok(&self) -> bool {
        self.0["ok"] == true
    }
    /// The refusal's message.
    pub fn error(&self) -> Option<&str> {
        self.0["error"].as_str()
    }
}

fn io(e: ClientError) -> std::io::Error {
    match e {
        ClientError::Io(io) => io,
        other => std::io::Error::other(other),
    }
}

impl ApiClient {
    /// Connects, retrying for a few seconds while the vmm starts.
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let start = Instant::now();
        loop {
            match Client::connect(path, REPLY_TIMEOUT) {
                Ok(c) => return Ok(ApiClient(c)),
                Err(e) if start.elapsed() > Duration::from_secs(10) => {
                    return Err(std::io::Error::other(e))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// One raw request line; the reply as it came, refusals included.
    pub fn call(&mut self, request: &str) -> std::io::Result<ApiReply> {
        self.0.call_line(request).map(ApiReply).map_err(io)
    }

    pub fn status(&mut self) -> std::io::Result<Status> {
        self.0.status().map_err(io)
    }

    /// Pauses at `landmark` (None: now); the status once paused.
    pub fn pause(&mut self, landmark: Option<u64>) -> std::io::Result<Status> {
        self.0.pause(landmark).map_err(io)
    }

    pub fn resume(&mut self) -> std::io::Result<Resumed> {
        self.0.resume().map_err(io)
    }

    pub fn digest(&mut self) -> std::io::Result<Digest> {
        self.0.digest().map_err(io)
    }

    pub fn protect(&mut self, peer: SocketAddr) -> std::io::Result<Protecting> {
        self.0.protect(peer).map_err(io)
    }
}
