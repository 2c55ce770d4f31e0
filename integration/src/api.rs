//! A client of the vmm's control socket (JSON lines; docs/PROTOCOL.md, "Control socket").

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct ApiClient(BufReader<UnixStream>);

/// A reply: the raw JSON text and accessors for the fields the tests use.
#[derive(Clone, Debug)]
pub struct ApiReply(pub String);

impl ApiReply {
    fn field(&self, key: &str) -> Option<&str> {
        let pat = format!("\"{key}\":");
        let start = self.0.find(&pat)? + pat.len();
        let rest = &self.0[start..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim_matches('"'))
    }
    pub fn ok(&self) -> bool {
        self.field("ok") == Some("true")
    }
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.field(key)?.parse().ok()
    }
    pub fn f64(&self, key: &str) -> Option<f64> {
        self.field(key)?.parse().ok()
    }
    pub fn str(&self, key: &str) -> Option<String> {
        self.field(key).map(str::to_string)
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
        Ok(ApiReply(line.trim().to_string()))
    }
}
