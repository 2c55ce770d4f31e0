//! virtio drivers over the virtio-mmio transport (virtio 1.2): `mmio` (transport, device
//! initialization), `queue` (split virtqueues), `net` and `blk`.

pub mod blk;
pub mod mmio;
pub mod net;
pub mod queue;
