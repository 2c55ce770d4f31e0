//! A client of the vmm's control socket (JSON lines; docs/PROTOCOL.md, "Control socket").

use std::path::Path;
use std::time::{Duration, Instant};

use vmm_api::{Client, ClientError};

/// Longer than the vmm's own wait for its vCPU thread (120 s, vmm/src/api.rs), so that the
/// vmm's answer, even "the vCPU did not answer", always arrives first.
const REPLY_TIMEOUT: Duration = Duration::from_secs(150);

/// `vmm_api::Client`, connected with retries, taking raw request lines (tests also send
/// malformed ones) and returning refusals as replies, not errors.
pub struct ApiClient(Client);

/// A reply, parsed, with accessors for the fields the tests use.
#[derive(Clone, Debug)]
pub struct ApiReply(pub serde_json::Value);

impl ApiReply {
    pub fn ok(&self) -> bool {
        self.0["ok"] == true
    }
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.0[key].as_u64()
    }
    pub fn f64(&self, key: &str) -> Option<f64> {
        self.0[key].as_f64()
    }
    pub fn str(&self, key: &str) -> Option<String> {
        self.0[key].as_str().map(str::to_string)
    }
    /// Any field, e.g. `reply.get("pic")["isr"]`.
    pub fn get(&self, key: &str) -> &serde_json::Value {
        &self.0[key]
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

    pub fn call(&mut self, request: &str) -> std::io::Result<ApiReply> {
        self.0
            .call_line(request)
            .map(ApiReply)
            .map_err(|e| match e {
                ClientError::Io(io) => io,
                other => std::io::Error::other(other),
            })
    }
}
