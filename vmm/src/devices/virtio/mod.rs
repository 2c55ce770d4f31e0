//! Virtio devices: the virtio-mmio transport (virtio 1.2 section 4.2) and the vhost-user
//! frontend that hands the device work to a backend process.

pub mod ft_link;
pub mod mmio;
pub mod ring;
pub mod slots;
pub mod vhost_user;

use virtio_bindings::virtio_config as config;

/// Device IDs (virtio 1.2 section 5).
pub use virtio_bindings::virtio_ids::{VIRTIO_ID_BLOCK as TYPE_BLOCK, VIRTIO_ID_NET as TYPE_NET};

/// VIRTIO_F_VERSION_1 (virtio 1.2 section 6): modern devices only.
pub const VIRTIO_F_VERSION_1: u64 = 1 << config::VIRTIO_F_VERSION_1;

/// Device status bits (virtio 1.2 section 2.1).
pub const STATUS_ACKNOWLEDGE: u32 = config::VIRTIO_CONFIG_S_ACKNOWLEDGE;
pub const STATUS_DRIVER: u32 = config::VIRTIO_CONFIG_S_DRIVER;
pub const STATUS_DRIVER_OK: u32 = config::VIRTIO_CONFIG_S_DRIVER_OK;
pub const STATUS_FEATURES_OK: u32 = config::VIRTIO_CONFIG_S_FEATURES_OK;
pub const STATUS_DEVICE_NEEDS_RESET: u32 = config::VIRTIO_CONFIG_S_NEEDS_RESET;
pub const STATUS_FAILED: u32 = config::VIRTIO_CONFIG_S_FAILED;

/// The guest-physical layout of one split virtqueue, as the driver programmed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueConfig {
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

/// Why a device could not be started (at DRIVER_OK, or when a backup goes live).
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("DRIVER_OK before ACKNOWLEDGE|DRIVER|FEATURES_OK")]
    NotNegotiated,
    #[error("backend not connected")]
    NotConnected,
    #[error("queue {queue}: invalid size {size}")]
    QueueSize { queue: usize, size: u16 },
    #[error("ring at {gpa:#x}+{len:#x} is outside guest memory")]
    RingOutside { gpa: u64, len: usize },
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("{request}: {source}")]
    VhostUser {
        request: &'static str,
        source: vhost::Error,
    },
}

/// What a transport needs from the device behind it.
pub trait VirtioBackend: Send {
    fn device_type(&self) -> u32;
    fn num_queues(&self) -> usize;
    fn queue_max_size(&self) -> u16;
    /// Features offered to the driver.
    fn device_features(&self) -> u64;
    fn read_config(&mut self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the negotiated features and the queues the driver set up.
    fn activate(
        &mut self,
        driver_features: u64,
        queues: &[QueueConfig],
    ) -> Result<(), ActivateError>;
    /// Stops the device (driver wrote 0 to Status).
    fn reset(&mut self);
    /// The vhost-user connection behind this device, if it has one.
    fn as_vhost_user(&mut self) -> Option<&mut vhost_user::VhostUserDevice> {
        None
    }
}
