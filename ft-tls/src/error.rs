use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("not a DNS name or IP address: {0:?}")]
    BadName(String),
    #[error("TLS handshake: {0}")]
    Handshake(String),
    #[error("TLS handshake not finished within {0} ms")]
    Timeout(u128),
    #[error("the peer's certificate does not name {expected}")]
    WrongPeer { expected: String },
    #[error("certificate generation: {0}")]
    Generate(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
