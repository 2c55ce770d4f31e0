//! `vhost-net-ft`: a vhost-user virtio-net backend on a Linux TAP device.
//!
//! Without fault tolerance this is a plain vhost-user net backend that any vhost-user frontend
//! can use. With `--ft-socket` it also offers the FT control channel ([`ft`]): while an FT
//! primary VMM is attached, completions go to the VMM and TX frames are held until released.
//!
//! Modules:
//! - [`tap`]: opening and configuring the TAP device, frame I/O on it.
//! - [`net`]: the virtio-net device (config space, virtio-net header, descriptor validation,
//!   RX and TX paths, the `VhostUserBackendMut` implementation, counters and their
//!   Prometheus metrics).
//! - [`server`]: the accept loop that serves one frontend after another on one socket path.
//! - [`ft`]: FT mode: the `--ft-socket` control connection, completions sent to the VMM
//!   instead of written to guest memory, TX frames held until the VMM releases them
//!   (discarded if the FT connection ends first).
//! - [`error`]: error types.

pub mod error;
pub mod ft;
pub mod net;
pub mod server;
pub mod tap;
