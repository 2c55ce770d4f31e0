//! The virtio-mmio transport, modern (version 2) register layout: virtio 1.2 section 4.2.2
//! ("MMIO Device Register Layout") and 4.2.3 ("MMIO-specific Initialization And Device
//! Operation"), with the generic initialization sequence of section 3.1.1.
//!
//! The shim maps 3-4 GiB uncached and user-accessible, so ring 3 accesses the registers
//! directly. Every access is a VMM exit (~20 us here): the drivers read registers only at
//! set-up and on interrupts. Control registers are accessed with aligned 32-bit volatile
//! loads and stores (4.2.2.2); the device configuration space with the natural width of
//! each field.

use super::queue::Virtqueue;
use crate::arch::irq;
use guestlib::devcfg::MmioDevice;

// Register offsets (4.2.2, table "MMIO Device Register Layout").
const MAGIC_VALUE: usize = 0x000;
const VERSION: usize = 0x004;
const DEVICE_ID: usize = 0x008;
const DEVICE_FEATURES: usize = 0x010;
const DEVICE_FEATURES_SEL: usize = 0x014;
const DRIVER_FEATURES: usize = 0x020;
const DRIVER_FEATURES_SEL: usize = 0x024;
const QUEUE_SEL: usize = 0x030;
const QUEUE_NUM_MAX: usize = 0x034;
const QUEUE_NUM: usize = 0x038;
const QUEUE_READY: usize = 0x044;
const QUEUE_NOTIFY: usize = 0x050;
const INTERRUPT_STATUS: usize = 0x060;
const INTERRUPT_ACK: usize = 0x064;
const STATUS: usize = 0x070;
const QUEUE_DESC_LOW: usize = 0x080;
const QUEUE_DESC_HIGH: usize = 0x084;
const QUEUE_DRIVER_LOW: usize = 0x090;
const QUEUE_DRIVER_HIGH: usize = 0x094;
const QUEUE_DEVICE_LOW: usize = 0x0a0;
const QUEUE_DEVICE_HIGH: usize = 0x0a4;
const CONFIG_GENERATION: usize = 0x0fc;
const CONFIG: usize = 0x100;

/// Status reads to wait for a reset to complete.
const RESET_POLLS: u32 = 1000;

/// "virt" in little-endian.
const MAGIC: u32 = 0x7472_6976;

// Device status bits (2.1).
const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const FAILED: u32 = 128;

/// VIRTIO_F_VERSION_1 (6, "Reserved Feature Bits"): a modern device.
pub const F_VERSION_1: u64 = 1 << 32;

/// Device types (5, "Device Types").
pub const DEVICE_NET: u32 = 1;
pub const DEVICE_BLK: u32 = 2;

/// The guest-physical window the shim maps uncached for devices (boot.S, GUEST-ABI.md).
const WINDOW: core::ops::Range<u64> = 0xc000_0000..0x1_0000_0000;

/// An identified virtio-mmio device, not yet initialised.
pub struct Transport {
    base: usize,
    pub irq: u8,
    pub device_id: u32,
    /// IRQ_COUNT[irq] when the interrupt status was last read.
    seen_irqs: u64,
}

impl Transport {
    /// Checks the magic value and the version (4.2.3.1.1) and reads the device type
    /// (0 = no device behind this slot).
    pub fn probe(dev: &MmioDevice) -> Result<Self, &'static str> {
        if dev.addr < WINDOW.start
            || dev.addr + dev.size.max(0x200) > WINDOW.end
            || !dev.addr.is_multiple_of(4096)
        {
            return Err("must be a page-aligned window between 0xc0000000 and 4 GiB");
        }
        if dev.irq >= irq::IRQ_LINES as u32 || dev.irq == 0 || dev.irq == 2 {
            return Err("interrupt line must be 1 or 3..=15");
        }
        let mut t = Self {
            base: dev.addr as usize,
            irq: dev.irq as u8,
            device_id: 0,
            seen_irqs: 0,
        };
        if t.read(MAGIC_VALUE) != MAGIC {
            return Err("no virtio-mmio magic value");
        }
        match t.read(VERSION) {
            2 => {}
            1 => {
                return Err(
                    "legacy virtio-mmio device (version 1) is not supported: version 2 required",
                )
            }
            _ => return Err("unknown virtio-mmio version"),
        }
        t.device_id = t.read(DEVICE_ID);
        t.seen_irqs = irq::count(t.irq.into());
        Ok(t)
    }

    pub fn base(&self) -> usize {
        self.base
    }

    fn reg(&self, offset: usize) -> *mut u32 {
        (self.base + offset) as *mut u32
    }

    fn read(&self, offset: usize) -> u32 {
        // SAFETY: an aligned register of the device window, mapped uncached by the shim.
        unsafe { self.reg(offset).read_volatile() }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: as for `read`.
        unsafe { self.reg(offset).write_volatile(value) }
    }

    /// 8-bit read of the device configuration space.
    pub fn config_u8(&self, offset: usize) -> u8 {
        // SAFETY: as for `read`.
        unsafe { ((self.base + CONFIG + offset) as *const u8).read_volatile() }
    }

    /// 16-bit read of the device configuration space (little-endian, 4.2.2.2).
    pub fn config_u16(&self, offset: usize) -> u16 {
        // SAFETY: as for `read`; `offset` is 2-aligned for 16-bit fields.
        unsafe { ((self.base + CONFIG + offset) as *const u16).read_volatile() }
    }

    pub fn config_u32(&self, offset: usize) -> u32 {
        self.read(CONFIG + offset)
    }

    /// A 64-bit configuration field read as two 32-bit halves, retried until the
    /// configuration generation is stable (4.2.2.2, 2.5.1 "Driver Requirements: Device
    /// Configuration Space").
    pub fn config_u64(&self, offset: usize) -> u64 {
        loop {
            let gen = self.read(CONFIG_GENERATION);
            let lo = u64::from(self.config_u32(offset));
            let hi = u64::from(self.config_u32(offset + 4));
            if self.read(CONFIG_GENERATION) == gen {
                return hi << 32 | lo;
            }
        }
    }

    /// Steps 1-6 of 3.1.1: reset, ACKNOWLEDGE, DRIVER, feature negotiation (the driver
    /// accepts `wanted & offered`; `VIRTIO_F_VERSION_1` must be offered), FEATURES_OK and its
    /// re-read. Returns the negotiated features.
    pub fn negotiate(&mut self, wanted: u64) -> Result<u64, &'static str> {
        // Reset (4.2.3.1: write 0, then wait until Status reads back 0).
        self.write(STATUS, 0);
        if !(0..RESET_POLLS).any(|_| self.read(STATUS) == 0) {
            return Err("device did not reset");
        }
        self.write(STATUS, ACKNOWLEDGE);
        self.write(STATUS, ACKNOWLEDGE | DRIVER);
        let mut offered = 0u64;
        for sel in 0..2u32 {
            self.write(DEVICE_FEATURES_SEL, sel);
            offered |= u64::from(self.read(DEVICE_FEATURES)) << (32 * sel);
        }
        if offered & F_VERSION_1 == 0 {
            self.fail();
            return Err("device does not offer VIRTIO_F_VERSION_1");
        }
        let accepted = (wanted | F_VERSION_1) & offered;
        for sel in 0..2u32 {
            self.write(DRIVER_FEATURES_SEL, sel);
            self.write(DRIVER_FEATURES, (accepted >> (32 * sel)) as u32);
        }
        self.write(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if self.read(STATUS) & FEATURES_OK == 0 {
            self.fail();
            return Err("device refused the negotiated features (FEATURES_OK not set)");
        }
        Ok(accepted)
    }

    /// Largest queue size the device supports for queue `index` (0: the queue does not exist).
    pub fn queue_max(&self, index: u32) -> u32 {
        self.write(QUEUE_SEL, index);
        self.read(QUEUE_NUM_MAX)
    }

    /// Virtqueue configuration (4.2.3.2): size, the three ring addresses, QueueReady.
    pub fn setup_queue(&mut self, index: u32, q: &Virtqueue) -> Result<(), &'static str> {
        self.write(QUEUE_SEL, index);
        if self.read(QUEUE_READY) != 0 {
            return Err("queue already in use");
        }
        let (desc, driver, device) = q.addresses();
        self.write(QUEUE_NUM, u32::from(q.size()));
        self.write(QUEUE_DESC_LOW, desc as u32);
        self.write(QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.write(QUEUE_DRIVER_LOW, driver as u32);
        self.write(QUEUE_DRIVER_HIGH, (driver >> 32) as u32);
        self.write(QUEUE_DEVICE_LOW, device as u32);
        self.write(QUEUE_DEVICE_HIGH, (device >> 32) as u32);
        self.write(QUEUE_READY, 1);
        Ok(())
    }

    /// Step 8 of 3.1.1: the device is live.
    pub fn driver_ok(&mut self) {
        self.write(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    }

    /// Sets FAILED (3.1.1: the driver gives up on the device).
    pub fn fail(&mut self) {
        self.write(STATUS, self.read(STATUS) | FAILED);
    }

    /// Available buffer notification for queue `index` (4.2.3.3).
    pub fn notify(&self, index: u32) {
        self.write(QUEUE_NOTIFY, index);
    }

    /// Whether the interrupt line fired since the last `ack_interrupt` (memory only).
    pub fn irq_pending(&self) -> bool {
        irq::count(self.irq.into()) != self.seen_irqs
    }

    /// If this device's interrupt line fired since the last call, reads InterruptStatus and
    /// acknowledges it (4.2.3.4): two exits, only when there was an interrupt. Call before
    /// looking at the used rings, so that a completion after the acknowledgement raises a
    /// new interrupt. Returns the status bits (bit 0: used buffer, bit 1: configuration
    /// change), 0 if there was no interrupt.
    pub fn ack_interrupt(&mut self) -> u32 {
        let n = irq::count(self.irq.into());
        if n == self.seen_irqs {
            return 0;
        }
        self.seen_irqs = n;
        let status = self.read(INTERRUPT_STATUS);
        if status != 0 {
            self.write(INTERRUPT_ACK, status);
        }
        status
    }
}
