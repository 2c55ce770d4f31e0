//! Emulated devices. `legacy` holds the PC platform devices on port I/O.
pub mod legacy;
pub mod mmio_bus;
pub mod virtio;
