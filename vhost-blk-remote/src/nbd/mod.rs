//! A client for the NBD protocol (the NBD project's doc/proto.md).
//!
//! - [`uri`]: `nbd://` and `nbd+unix://` URIs.
//! - [`proto`]: wire constants and encodings.
//! - [`stream`]: a TCP or Unix stream.
//! - [`handshake`]: fixed newstyle negotiation (`NBD_OPT_GO`, falling back to
//!   `NBD_OPT_EXPORT_NAME`).
//! - [`client`]: the transmission phase: several requests in flight, replies matched by
//!   cookie, transparent reconnection with re-sending of unanswered requests (the threads
//!   doing it live in the private `conn` module).

pub mod client;
mod conn;
pub mod handshake;
pub mod proto;
pub mod stream;
pub mod uri;

pub use client::{Callback, Client, ClientOptions, Command};
pub use handshake::ExportInfo;
pub use uri::{Address, NbdUri};

/// Errors of the NBD client.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("invalid NBD URI {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("I/O error talking to the NBD server: {0}")]
    Io(#[from] std::io::Error),
    #[error("NBD protocol violation: {0}")]
    Protocol(String),
    #[error("server does not support fixed newstyle negotiation")]
    NotFixedNewstyle,
    #[error("server refused option {option}: {} ({code:#x}) {message}", proto::rep_err_name(*.code))]
    OptionRejected {
        option: u32,
        code: u32,
        message: String,
    },
    #[error("the export is read-only")]
    ReadOnly,
    #[error("the export does not support {0}")]
    Unsupported(&'static str),
    #[error("request [{offset}, +{len}) is outside the export (size {size})")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("request [{offset}, +{len}) is not aligned to the minimum block size {min_block}")]
    Unaligned {
        offset: u64,
        len: u64,
        min_block: u32,
    },
    #[error("request of {len} bytes exceeds the maximum payload of {max}")]
    TooLarge { len: u64, max: u32 },
    #[error("server returned error {} ({code})", proto::errno_name(*.code))]
    Server { code: u32 },
    #[error("the NBD client is closed")]
    Closed,
    #[error("the export changed since the device was set up; refused until it is back")]
    ExportChanged,
}

impl NbdError {
    /// Whether retrying the connection may help (the server is down or restarting), as opposed
    /// to a configuration error (unknown export, TLS required, ...).
    pub fn is_transient(&self) -> bool {
        match self {
            NbdError::Io(_) => true,
            NbdError::OptionRejected { code, .. } => *code == proto::NBD_REP_ERR_SHUTDOWN,
            _ => false,
        }
    }
}
