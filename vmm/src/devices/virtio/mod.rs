//! Virtio devices: the virtio-mmio transport (virtio 1.2 section 4.2) and the vhost-user
//! frontend that hands the device work to a backend process.

pub mod ft_link;
pub mod mmio;
pub mod ring;
pub mod slots;
pub mod vhost_user;

/// Device IDs (virtio 1.2 section 5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;

/// VIRTIO_F_VERSION_1 (virtio 1.2 section 6): modern devices only.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device status bits (virtio 1.2 section 2.1).
pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_DEVICE_NEEDS_RESET: u32 = 0x40;
pub const STATUS_FAILED: u32 = 0x80;

/// The guest-physical layout of one split virtqueue, as the driver programmed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueConfig {
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
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
    fn activate(&mut self, driver_features: u64, queues: &[QueueConfig]) -> Result<(), String>;
    /// Stops the device (driver wrote 0 to Status).
    fn reset(&mut self);
    /// The vhost-user connection behind this device, if it has one.
    fn as_vhost_user(&mut self) -> Option<&mut vhost_user::VhostUserDevice> {
        None
    }
}
