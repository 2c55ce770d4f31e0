//! What every FT vhost-user backend shares (docs/PROTOCOL.md, "FT control channel"):
//!
//! - [`server`]: the `--ft-socket` server. One VMM connection at a time; only the process
//!   that owns the vhost-user connection may open one; the `Hello`/`HelloAck` handshake with
//!   the role in force before the answer; `Release` and `SetRole` handed to the backend; a
//!   misbehaving peer loses its connection, never the backend.
//! - [`conn`]: the write side of a VMM connection and the one write-timeout policy.
//! - [`gate`]: the output gate: numbering, hold, release-up-to, release-all on going live,
//!   discard on disconnect.
//!
//! The digest of an output is `ft_control::digest` (shared with the backup VMM's check).
//! Each backend keeps only what is its own: vhost-net-ft sends frames to the TAP and sends a
//! TX chain's completion after its frame; vhost-blk-remote issues NBD commands.

pub mod conn;
pub mod gate;
pub mod server;

pub use conn::{VmmConn, FT_WRITE_TIMEOUT};
pub use gate::Gate;
pub use server::{FtBackend, FtServer, ServerError};
