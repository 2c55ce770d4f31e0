//! The virtio-mmio transport, modern interface only (virtio 1.2 section 4.2.2, "MMIO Device
//! Register Layout"). The register file lives here; the device itself is a `VirtioBackend`.

use super::{
    ActivateError, QueueConfig, VirtioBackend, STATUS_ACKNOWLEDGE, STATUS_DEVICE_NEEDS_RESET,
    STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK, VIRTIO_F_VERSION_1,
};
use crate::devices::mmio_bus::MmioDevice;
use crate::persist::Persist;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const VERSION_MODERN: u32 = 2;
const VENDOR_ID: u32 = 0x554d_4551; // "QEMU", as other VMMs report; drivers ignore it
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// InterruptStatus bits (virtio 1.2 section 4.2.2).
pub const INT_USED_RING: u32 = mmio::VIRTIO_MMIO_INT_VRING;
pub const INT_CONFIG: u32 = mmio::VIRTIO_MMIO_INT_CONFIG;

// Register offsets (virtio 1.2 section 4.2.2), from virtio-bindings.
use virtio_bindings::virtio_mmio as mmio;

const REG_MAGIC: u64 = mmio::VIRTIO_MMIO_MAGIC_VALUE as u64;
const REG_VERSION: u64 = mmio::VIRTIO_MMIO_VERSION as u64;
const REG_DEVICE_ID: u64 = mmio::VIRTIO_MMIO_DEVICE_ID as u64;
const REG_VENDOR_ID: u64 = mmio::VIRTIO_MMIO_VENDOR_ID as u64;
const REG_DEVICE_FEATURES: u64 = mmio::VIRTIO_MMIO_DEVICE_FEATURES as u64;
const REG_DEVICE_FEATURES_SEL: u64 = mmio::VIRTIO_MMIO_DEVICE_FEATURES_SEL as u64;
const REG_DRIVER_FEATURES: u64 = mmio::VIRTIO_MMIO_DRIVER_FEATURES as u64;
const REG_DRIVER_FEATURES_SEL: u64 = mmio::VIRTIO_MMIO_DRIVER_FEATURES_SEL as u64;
const REG_QUEUE_SEL: u64 = mmio::VIRTIO_MMIO_QUEUE_SEL as u64;
const REG_QUEUE_NUM_MAX: u64 = mmio::VIRTIO_MMIO_QUEUE_NUM_MAX as u64;
const REG_QUEUE_NUM: u64 = mmio::VIRTIO_MMIO_QUEUE_NUM as u64;
const REG_QUEUE_READY: u64 = mmio::VIRTIO_MMIO_QUEUE_READY as u64;
const REG_QUEUE_NOTIFY: u64 = mmio::VIRTIO_MMIO_QUEUE_NOTIFY as u64;
const REG_INTERRUPT_STATUS: u64 = mmio::VIRTIO_MMIO_INTERRUPT_STATUS as u64;
const REG_INTERRUPT_ACK: u64 = mmio::VIRTIO_MMIO_INTERRUPT_ACK as u64;
const REG_STATUS: u64 = mmio::VIRTIO_MMIO_STATUS as u64;
const REG_QUEUE_DESC_LOW: u64 = mmio::VIRTIO_MMIO_QUEUE_DESC_LOW as u64;
const REG_QUEUE_DESC_HIGH: u64 = mmio::VIRTIO_MMIO_QUEUE_DESC_HIGH as u64;
const REG_QUEUE_DRIVER_LOW: u64 = mmio::VIRTIO_MMIO_QUEUE_AVAIL_LOW as u64;
const REG_QUEUE_DRIVER_HIGH: u64 = mmio::VIRTIO_MMIO_QUEUE_AVAIL_HIGH as u64;
const REG_QUEUE_DEVICE_LOW: u64 = mmio::VIRTIO_MMIO_QUEUE_USED_LOW as u64;
const REG_QUEUE_DEVICE_HIGH: u64 = mmio::VIRTIO_MMIO_QUEUE_USED_HIGH as u64;
const REG_CONFIG_GENERATION: u64 = mmio::VIRTIO_MMIO_CONFIG_GENERATION as u64;
const REG_CONFIG: u64 = mmio::VIRTIO_MMIO_CONFIG as u64;
/// Offset of QueueNotify, where the VMM registers the kick ioeventfds.
pub const QUEUE_NOTIFY_OFFSET: u64 = REG_QUEUE_NOTIFY;

/// Transport state that a snapshot must carry.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MmioState {
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub queues: Vec<QueueConfig>,
    pub interrupt_status: u32,
    pub config_generation: u32,
    pub activated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MmioStateError {
    #[error("transport state has {got} queues, the device {wanted}")]
    Queues { got: usize, wanted: usize },
    #[error("queue {queue} of size {size} is over the device's maximum {max}")]
    QueueSize { queue: usize, size: u16, max: u16 },
}

/// The low 32 bits: the feature registers show 64 feature bits 32 at a time (virtio 1.2
/// section 4.2.2, DeviceFeaturesSel).
fn low_half(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).unwrap_or(0)
}

impl MmioState {
    /// Whether the driver could have left this state on `backend`'s device: as many queues
    /// as it has, none larger than it allows.
    fn check(&self, backend: &dyn VirtioBackend) -> Result<(), MmioStateError> {
        let wanted = backend.num_queues();
        if self.queues.len() != wanted {
            return Err(MmioStateError::Queues {
                got: self.queues.len(),
                wanted,
            });
        }
        let max = backend.queue_max_size();
        match self.queues.iter().position(|q| q.size > max) {
            Some(queue) => Err(MmioStateError::QueueSize {
                queue,
                size: self.queues[queue].size,
                max,
            }),
            None => Ok(()),
        }
    }
}

/// What a restored transport needs besides its registers: the device behind it, and
/// whether that device is held stopped (FT backup).
pub struct TransportArgs {
    pub backend: Box<dyn VirtioBackend>,
    pub hold_backend: bool,
}

pub struct MmioTransport {
    backend: Box<dyn VirtioBackend>,
    state: MmioState,
    /// FT backup: the device model runs (the guest sees the same registers) but the backend
    /// is not started, so it neither processes rings nor writes guest memory. Going live
    /// starts it.
    hold_backend: bool,
}

fn set_half(value: &mut u64, high: bool, half: u32) {
    if high {
        *value = (*value & 0xffff_ffff) | (u64::from(half) << 32);
    } else {
        *value = (*value & !0xffff_ffff) | u64::from(half);
    }
}

impl MmioTransport {
    pub fn new(backend: Box<dyn VirtioBackend>) -> Self {
        let queues = vec![QueueConfig::default(); backend.num_queues()];
        MmioTransport {
            backend,
            state: MmioState {
                queues,
                ..Default::default()
            },
            hold_backend: false,
        }
    }

    /// Keeps the backend stopped (FT backup) or, when `hold` is false, starts it if the driver
    /// has set DRIVER_OK (going live).
    pub fn hold_backend(&mut self, hold: bool) -> Result<(), ActivateError> {
        self.hold_backend = hold;
        if !hold && self.state.activated {
            self.backend
                .activate(self.state.driver_features, &self.state.queues)?;
        }
        Ok(())
    }

    pub fn state(&self) -> &MmioState {
        &self.state
    }

    /// Takes over a primary's transport state (FT backup). The backend is not started: a
    /// backup's backends stay idle; going live activates them. A state that does not fit
    /// this device changes nothing.
    pub fn reload(&mut self, state: &MmioState) -> Result<(), MmioStateError> {
        self.check(state)?;
        self.state = state.clone();
        Ok(())
    }

    /// Whether `state` fits this transport's device (`reload` would take it).
    pub fn check(&self, state: &MmioState) -> Result<(), MmioStateError> {
        state.check(self.backend.as_ref())
    }

    /// The virtio device type (virtio 1.2 section 5: 1 net, 2 block).
    pub fn device_type(&self) -> u32 {
        self.backend.device_type()
    }

    pub fn backend_mut(&mut self) -> &mut dyn VirtioBackend {
        self.backend.as_mut()
    }

    /// The device used a buffer: set the InterruptStatus bit. Returns whether the driver is
    /// live (so the caller should raise the IRQ line).
    pub fn signal_used(&mut self) -> bool {
        self.state.interrupt_status |= INT_USED_RING;
        self.state.status & STATUS_DRIVER_OK != 0
    }

    fn offered_features(&self) -> u64 {
        self.backend.device_features() | VIRTIO_F_VERSION_1
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        // Writes to queue registers are only meaningful before DRIVER_OK (4.2.3.2).
        let sel = self.state.queue_sel as usize;
        self.state.queues.get_mut(sel)
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => VERSION_MODERN,
            REG_DEVICE_ID => self.backend.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.state.device_features_sel {
                0 => low_half(self.offered_features()),
                1 => low_half(self.offered_features() >> 32),
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => {
                let max = self.backend.queue_max_size();
                self.selected_queue().map_or(0, |_| u32::from(max))
            }
            REG_QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready)),
            REG_INTERRUPT_STATUS => self.state.interrupt_status,
            REG_STATUS => self.state.status,
            REG_CONFIG_GENERATION => self.state.config_generation,
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        let live = self.state.status & STATUS_DRIVER_OK != 0;
        match offset {
            REG_DEVICE_FEATURES_SEL => self.state.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.state.driver_features_sel = value,
            REG_DRIVER_FEATURES if self.state.status & STATUS_FEATURES_OK == 0 => {
                match self.state.driver_features_sel {
                    0 => set_half(&mut self.state.driver_features, false, value),
                    1 => set_half(&mut self.state.driver_features, true, value),
                    _ => {}
                }
            }
            REG_QUEUE_SEL => self.state.queue_sel = value,
            REG_QUEUE_NUM | REG_QUEUE_READY | REG_QUEUE_DESC_LOW..=REG_QUEUE_DEVICE_HIGH
                if live =>
            {
                log::warn!(
                    "virtio-mmio: queue register {offset:#x} written after DRIVER_OK; ignored"
                );
            }
            REG_QUEUE_NUM => {
                if let Some(q) = self.selected_queue() {
                    // Larger than any queue: 0, which activation refuses.
                    q.size = u16::try_from(value).unwrap_or(0);
                }
            }
            REG_QUEUE_READY => {
                if let Some(q) = self.selected_queue() {
                    q.ready = value & 1 == 1;
                }
            }
            REG_QUEUE_DESC_LOW | REG_QUEUE_DESC_HIGH => {
                if let Some(q) = self.selected_queue() {
                    set_half(&mut q.desc, offset == REG_QUEUE_DESC_HIGH, value);
                }
            }
            REG_QUEUE_DRIVER_LOW | REG_QUEUE_DRIVER_HIGH => {
                if let Some(q) = self.selected_queue() {
                    set_half(&mut q.driver, offset == REG_QUEUE_DRIVER_HIGH, value);
                }
            }
            REG_QUEUE_DEVICE_LOW | REG_QUEUE_DEVICE_HIGH => {
                if let Some(q) = self.selected_queue() {
                    set_half(&mut q.device, offset == REG_QUEUE_DEVICE_HIGH, value);
                }
            }
            // Caught by an ioeventfd when the device is live; an exit here means the kick came
            // before activation or for a queue that does not exist. Nothing to do.
            REG_QUEUE_NOTIFY => {}
            REG_INTERRUPT_ACK => self.state.interrupt_status &= !value,
            REG_STATUS => self.write_status(value),
            _ => log::debug!("virtio-mmio: write of {value:#x} to unknown register {offset:#x}"),
        }
    }

    /// Device status transitions (virtio 1.2 section 3.1.1, "Driver Requirements: Device
    /// Initialization").
    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.state.status;
        let mut new = value;
        if new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            let unknown = self.state.driver_features & !self.offered_features();
            if unknown != 0 || self.state.driver_features & VIRTIO_F_VERSION_1 == 0 {
                log::warn!(
                    "virtio-mmio: driver features {:#x} not acceptable (offered {:#x}); FEATURES_OK refused",
                    self.state.driver_features,
                    self.offered_features()
                );
                new &= !STATUS_FEATURES_OK;
            }
        }
        if new & STATUS_DRIVER_OK != 0 && !self.state.activated {
            let ready = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
            let result = if new & ready != ready {
                Err(ActivateError::NotNegotiated)
            } else if self.hold_backend {
                Ok(())
            } else {
                self.backend
                    .activate(self.state.driver_features, &self.state.queues)
            };
            match result {
                Ok(()) => self.state.activated = true,
                Err(e) => {
                    log::error!(
                        "virtio-mmio: cannot activate device type {}: {e}",
                        self.backend.device_type()
                    );
                    new |= STATUS_DEVICE_NEEDS_RESET;
                }
            }
        }
        self.state.status = new;
    }

    fn reset(&mut self) {
        if self.state.activated && !self.hold_backend {
            self.backend.reset();
        }
        let queues = vec![QueueConfig::default(); self.backend.num_queues()];
        self.state = MmioState {
            queues,
            config_generation: self.state.config_generation,
            ..Default::default()
        };
    }
}

impl MmioDevice for MmioTransport {
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            self.backend.read_config(offset - REG_CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::warn!(
                "virtio-mmio: {}-byte read at {offset:#x} is not a 32-bit register access",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        if offset >= REG_CONFIG {
            self.backend.write_config(offset - REG_CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::warn!(
                "virtio-mmio: {}-byte write at {offset:#x} ignored",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

/// The register file is the state; the device behind it (a vhost-user connection) is the
/// host's. A restored transport does not activate its device (see `reload`).
impl Persist for MmioTransport {
    type State = MmioState;
    type ConstructorArgs = TransportArgs;
    type Error = MmioStateError;

    fn save(&self) -> MmioState {
        self.state.clone()
    }

    fn restore(args: TransportArgs, state: &MmioState) -> Result<Self, MmioStateError> {
        let mut t = MmioTransport::new(args.backend);
        t.hold_backend = args.hold_backend;
        t.reload(state)?;
        Ok(t)
    }
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
