//! A client of the vmm's control socket (JSON lines; docs/PROTOCOL.md, "Control socket").

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct ApiClient(BufReader<UnixStream>);

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
            match UnixStream::connect(path) {
                Ok(s) => return Ok(ApiClient(BufReader::new(s))),
                Err(e) if start.elapsed() > Duration::from_secs(10) => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn call(&mut self, request: &str) -> std::io::Result<ApiReply> {
        self.0
            .get_mut()
            .write_all(format!("{request}\n").as_bytes())?;
        let mut line = String::new();
        self.0.read_line(&mut line)?;
        serde_json::from_str(&line).map(ApiReply).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e}: {line:?}"))
        })
    }
}
