//! Where virtio-mmio devices live: one 4 KiB window each from `VIRTIO_MMIO_BASE`, one PIC
//! line each, announced to the guest with Linux's `virtio_mmio.device=SIZE@ADDR:IRQ`
//! command-line syntax (Linux `drivers/virtio/virtio_mmio.c`).

use super::mmio::{MmioState, MmioStateError, MmioTransport, MMIO_WINDOW_SIZE};
use crate::devices::mmio_bus::{MmioBus, MmioDevice, OverlapError};
use crate::persist::Persist;

/// First device window: inside the MMIO gap below 4 GiB.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// PIC lines for virtio devices: 0 (PIT), 2 (cascade), 4 (COM1) and 8 (RTC) are taken.
const VIRTIO_IRQS: [u8; 8] = [5, 6, 7, 9, 10, 11, 12, 15];

pub struct VirtioSlot {
    pub transport: MmioTransport,
    pub base: u64,
    pub irq: u8,
}

#[derive(Default)]
pub struct VirtioDevices {
    bus: MmioBus,
    pub slots: Vec<VirtioSlot>,
}

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("too many virtio devices (at most {0})")]
    Full(usize),
    #[error(transparent)]
    Overlap(#[from] OverlapError),
}

#[derive(Debug, thiserror::Error)]
pub enum VirtioStateError {
    #[error("state for {got} virtio devices, this VM has {wanted}")]
    Count { got: usize, wanted: usize },
    #[error("virtio device {slot}: {source}")]
    Device { slot: usize, source: MmioStateError },
}

impl VirtioDevices {
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the next device will be: `(base address, irq)`.
    pub fn next_slot(&self) -> Result<(u64, u8), SlotError> {
        let n = self.slots.len();
        let irq = *VIRTIO_IRQS
            .get(n)
            .ok_or(SlotError::Full(VIRTIO_IRQS.len()))?;
        Ok((VIRTIO_MMIO_BASE + n as u64 * MMIO_WINDOW_SIZE, irq))
    }

    /// Adds a device in the next slot and returns its index.
    pub fn add(&mut self, transport: MmioTransport) -> Result<usize, SlotError> {
        let (base, irq) = self.next_slot()?;
        let index = self.slots.len();
        self.bus.insert(base, MMIO_WINDOW_SIZE, index)?;
        self.slots.push(VirtioSlot {
            transport,
            base,
            irq,
        });
        Ok(index)
    }

    /// Every transport's register file, in slot order.
    pub fn save(&self) -> Vec<MmioState> {
        self.slots.iter().map(|s| s.transport.save()).collect()
    }

    /// Takes over saved transport states (one per slot, in order). Every state is checked
    /// against its device before any is applied: a refused set changes nothing.
    pub fn reload(&mut self, states: &[MmioState]) -> Result<(), VirtioStateError> {
        if states.len() != self.slots.len() {
            return Err(VirtioStateError::Count {
                got: states.len(),
                wanted: self.slots.len(),
            });
        }
        let device = |slot| move |source| VirtioStateError::Device { slot, source };
        for (i, (slot, state)) in self.slots.iter().zip(states).enumerate() {
            slot.transport.check(state).map_err(device(i))?;
        }
        for (i, (slot, state)) in self.slots.iter_mut().zip(states).enumerate() {
            slot.transport.reload(state).map_err(device(i))?;
        }
        Ok(())
    }

    /// The command-line words that announce every device.
    pub fn cmdline_words(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|s| {
                format!(
                    "virtio_mmio.device={}K@{:#x}:{}",
                    MMIO_WINDOW_SIZE >> 10,
                    s.base,
                    s.irq
                )
            })
            .collect()
    }

    /// Handles an MMIO read; false if no device is there.
    pub fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        match self.bus.resolve(addr, data.len()) {
            Some((i, offset)) => {
                self.slots[i].transport.mmio_read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Handles an MMIO write; false if no device is there.
    pub fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        match self.bus.resolve(addr, data.len()) {
            Some((i, offset)) => {
                self.slots[i].transport.mmio_write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::{ActivateError, QueueConfig, VirtioBackend};

    struct Nothing;
    impl VirtioBackend for Nothing {
        fn device_type(&self) -> u32 {
            1
        }
        fn num_queues(&self) -> usize {
            2
        }
        fn queue_max_size(&self) -> u16 {
            256
        }
        fn device_features(&self) -> u64 {
            0
        }
        fn read_config(&mut self, _: u64, _: &mut [u8]) {}
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(&mut self, _: u64, _: &[QueueConfig]) -> Result<(), ActivateError> {
            Ok(())
        }
        fn reset(&mut self) {}
    }

    #[test]
    fn devices_get_consecutive_windows_and_irqs() {
        let mut d = VirtioDevices::new();
        d.add(MmioTransport::new(Box::new(Nothing))).expect("first");
        d.add(MmioTransport::new(Box::new(Nothing)))
            .expect("second");
        assert_eq!(
            d.cmdline_words(),
            vec![
                "virtio_mmio.device=4K@0xd0000000:5",
                "virtio_mmio.device=4K@0xd0001000:6"
            ]
        );
        let mut magic = [0u8; 4];
        assert!(d.mmio_read(0xd000_1000, &mut magic));
        assert_eq!(u32::from_le_bytes(magic), 0x7472_6976);
        assert!(!d.mmio_read(0xd000_2000, &mut magic));
    }

    #[test]
    fn a_wrong_number_of_states_or_one_bad_state_changes_nothing() {
        let mut d = VirtioDevices::new();
        d.add(MmioTransport::new(Box::new(Nothing))).expect("first");
        d.add(MmioTransport::new(Box::new(Nothing)))
            .expect("second");
        let before = d.save();
        assert!(matches!(
            d.reload(&before[..1]),
            Err(VirtioStateError::Count { got: 1, wanted: 2 })
        ));
        let mut changed = before.clone();
        changed[0].status = 0x0f;
        changed[1].queues.pop();
        assert!(matches!(
            d.reload(&changed),
            Err(VirtioStateError::Device { slot: 1, .. })
        ));
        assert_eq!(d.save(), before, "slot 0 was not changed either");
        changed[1] = before[1].clone();
        d.reload(&changed).expect("reload");
        assert_eq!(d.save(), changed);
    }

    #[test]
    fn slots_run_out_cleanly() {
        let mut d = VirtioDevices::new();
        for _ in 0..VIRTIO_IRQS.len() {
            d.add(MmioTransport::new(Box::new(Nothing))).expect("slot");
        }
        assert!(matches!(
            d.add(MmioTransport::new(Box::new(Nothing))),
            Err(SlotError::Full(_))
        ));
    }
}
