//! The control socket's requests.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest request line the vmm accepts: a client cannot make it buffer more than this.
pub const MAX_LINE: usize = 4096;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// The run state, the landmark, exit counts and, in FT mode, the replication figures.
    Status,
    /// Pause the vCPU at `landmark` (or at the next landmark); answered once paused.
    Pause {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        landmark: Option<u64>,
    },
    Resume,
    /// Paused only: SHA-256 of guest RAM and of the vCPU registers.
    Digest,
    /// Paused only: write a snapshot file of the VM to `path` (absolute, must not exist).
    Snapshot {
        path: PathBuf,
    },
    /// FT primary without a backup: look for one at `peer` (HOST:PORT) from now on.
    Protect {
        peer: SocketAddr,
    },
}

impl Request {
    /// The request line, without its newline.
    pub fn to_line(&self) -> String {
        // A derived Serialize of plain fields into JSON cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        for (req, line) in [
            (Request::Status, r#"{"cmd":"status"}"#),
            (Request::Pause { landmark: None }, r#"{"cmd":"pause"}"#),
            (
                Request::Pause { landmark: Some(42) },
                r#"{"cmd":"pause","landmark":42}"#,
            ),
            (Request::Resume, r#"{"cmd":"resume"}"#),
            (Request::Digest, r#"{"cmd":"digest"}"#),
            (
                Request::Protect {
                    peer: "10.78.0.5:7001".parse().unwrap(),
                },
                r#"{"cmd":"protect","peer":"10.78.0.5:7001"}"#,
            ),
        ] {
            assert_eq!(req.to_line(), line);
            assert_eq!(serde_json::from_str::<Request>(line).unwrap(), req);
        }
    }
}
