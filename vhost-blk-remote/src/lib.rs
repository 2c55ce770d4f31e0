//! `vhost-blk-remote`: a vhost-user block device backend whose storage is a remote NBD
//! export.
//!
//! - [`nbd`]: the NBD client (handshake, several requests in flight, reconnection).
//! - [`blk`]: the virtio-blk device on top of it (request parsing, execution against NBD,
//!   in-order completion, the vhost-user backend).
//! - [`daemon`]: the accept loop serving one frontend after another on a Unix socket.
//! - [`ft`]: fault-tolerance mode (`--ft-socket`): completions to the VMM, outputs held
//!   until the VMM releases them.

pub mod blk;
pub mod daemon;
pub mod ft;
pub mod metrics;
pub mod nbd;
