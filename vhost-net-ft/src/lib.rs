//! `vhost-net-ft`: a vhost-user virtio-net backend on a Linux TAP device.
//!
//! Without fault tolerance this is a plain vhost-user net backend that any vhost-user frontend
//! can use. The code is split so that the fault-tolerant NIC (bounce buffer, held output,
//! dropped backup output) can be added without restructuring; see [`net`] for the data path
//! and where the FT hooks go.
//!
//! Modules:
//! - [`tap`]: opening and configuring the TAP device, frame I/O on it.
//! - [`net`]: the virtio-net device (config space, virtio-net header, descriptor validation,
//!   RX and TX paths, the `VhostUserBackendMut` implementation, counters).
//! - [`server`]: the accept loop that serves one frontend after another on one socket path.
//! - [`error`]: error types.

pub mod error;
pub mod net;
pub mod server;
pub mod tap;
