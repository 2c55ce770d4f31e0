//! Errors of the arbiter library.

use std::io;
use std::path::PathBuf;

/// Errors of the state store and the server. Request-level problems (bad JSON, invalid
/// fields) are not errors of this kind: they become `{"ok":false,...}` replies instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The state file exists but cannot be parsed. Never reset it silently: forgetting a
    /// grant would let a second side win the same epoch (split brain).
    #[error("corrupt state file {path}: {reason} (refusing to start; fix or remove it by hand)")]
    CorruptState { path: PathBuf, reason: String },
    /// The state file is the only record of the epochs already won: without it an arbiter
    /// could grant one of them again, so only `--init` starts with no flags.
    #[error("no state file {0} (refusing to start: a missing file would forget the epochs already granted; `arbiter serve --init` creates a fresh one)")]
    StateMissing(PathBuf),
    #[error("state file {0} already exists (refusing --init: it holds the epochs already granted; start without --init)")]
    StateExists(PathBuf),
    #[error("TLS: {0}")]
    Tls(#[from] ft_tls::TlsError),
    #[error("serve needs --tls-dir DIR (mutual TLS) or an explicit --insecure")]
    NoSecurity,
    #[error("no flag for vm {0}")]
    NoFlag(String),
    #[error("state directory {0} does not exist or is not a directory")]
    StateDirMissing(PathBuf),
    /// Two arbiters on one state directory would each grant the same flag once.
    #[error("state directory {0} is locked by another arbiter process")]
    Locked(PathBuf),
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
