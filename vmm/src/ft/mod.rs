//! Fault tolerance: a primary VMM records every non-deterministic input at its landmark and
//! streams it to a backup VMM, which replays it at the same landmarks (docs/ARCHITECTURE.md,
//! "Fault tolerance"; wire format in docs/PROTOCOL.md).

pub mod backup;
pub mod channel;
pub mod dirty;
pub mod failover;
pub mod precopy;
pub mod primary;
pub mod record;
pub mod signature;
pub mod state;

/// Device numbers in `DeviceEvent` records. Virtio devices use their slot number.
pub const DEV_PIT: u16 = 0xff00;
pub const DEV_SERIAL: u16 = 0xff01;
/// The running hash of landmark signatures (`arg`), so that every landmark is checked.
pub const DEV_SIGNATURES: u16 = 0xff02;

/// Event numbers in `DeviceEvent` records.
pub const EV_PIT_TICK: u16 = 1;
pub const EV_PIT_CLOCK: u16 = 2;
pub const EV_SERIAL_INPUT: u16 = 3;
pub const EV_VIRTIO_USED: u16 = 4;
pub const EV_SIGNATURE_HASH: u16 = 5;
