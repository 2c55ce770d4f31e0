//! The vmm's control socket (`--api-sock PATH`, docs/PROTOCOL.md "Control socket") as
//! types: what the vmm's server parses and answers, what `ftctl` and the tests send and
//! read. One JSON object per line each way; a reply is `{"ok":true,...}` or
//! `{"ok":false,"error":"..."}`.
//!
//! - [`Request`]: the commands.
//! - [`Status`] (with [`FtStatus`]), [`Digest`], [`Resumed`], [`Protecting`],
//!   [`SnapshotWritten`]: the typed replies.
//! - [`Client`]: a blocking client with a reply timeout and errors a person can act on.

mod client;
mod request;
mod status;

pub use client::{Client, ClientError, DEFAULT_TIMEOUT};
pub use request::{Request, MAX_LINE};
pub use status::{
    Digest, FtStatus, JoinProgress, Pic, Protecting, Resumed, Role, RunState, SnapshotWritten,
    Status,
};
