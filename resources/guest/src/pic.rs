//! 8259A programmable interrupt controller pair (master at 0x20, slave at 0xA0, cascaded on
//! the master's IRQ 2), as on every PC. Reference: Intel 8259A datasheet, "Programming the
//! 8259A" (initialization command words ICW1-ICW4, operation command word OCW1).
//!
//! The shim's IDT has the IRQ stubs at vectors 0x20-0x2f, above the 32 vectors the CPU
//! reserves for exceptions; the PIC is remapped there. EOIs are sent by the ring-0 stubs.

use crate::arch::port::outb;

const MASTER_CMD: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_CMD: u16 = 0xa0;
const SLAVE_DATA: u16 = 0xa1;

/// Vector of IRQ 0 (master) and of IRQ 8 (slave), as wired in boot.S.
pub const MASTER_VECTOR_BASE: u8 = 0x20;
pub const SLAVE_VECTOR_BASE: u8 = 0x28;

/// The slave's INT output is connected to this master input.
const CASCADE_IRQ: u8 = 2;

/// ICW1: bit 4 = initialization, bit 0 = ICW4 follows; edge triggered, cascade mode.
const ICW1_INIT_ICW4: u8 = 0x11;
/// ICW4: 8086/8088 mode, normal (not automatic) EOI.
const ICW4_8086: u8 = 0x01;

/// IRQ line bit mask: bit n = IRQ n.
pub const fn irq_bit(irq: u8) -> u16 {
    1 << irq
}

/// Initialises both PICs and unmasks exactly the IRQ lines in `enabled` (bit n = IRQ n);
/// the cascade line is unmasked automatically when a slave line is enabled.
pub fn init(enabled: u16) {
    // ICW1 starts the sequence; ICW2-ICW4 then go to the data port, in this order.
    outb(MASTER_CMD, ICW1_INIT_ICW4);
    outb(SLAVE_CMD, ICW1_INIT_ICW4);
    outb(MASTER_DATA, MASTER_VECTOR_BASE); // ICW2: vector of IR0
    outb(SLAVE_DATA, SLAVE_VECTOR_BASE);
    outb(MASTER_DATA, 1 << CASCADE_IRQ); // ICW3 (master): bit mask of inputs with a slave
    outb(SLAVE_DATA, CASCADE_IRQ); // ICW3 (slave): its cascade identity
    outb(MASTER_DATA, ICW4_8086);
    outb(SLAVE_DATA, ICW4_8086);
    set_mask(enabled);
}

/// OCW1: writes the interrupt mask registers so that only the lines in `enabled` can
/// interrupt (a set mask bit disables the line).
pub fn set_mask(enabled: u16) {
    let mut enabled = enabled;
    if enabled & 0xff00 != 0 {
        enabled |= irq_bit(CASCADE_IRQ);
    }
    let masked = !enabled;
    outb(MASTER_DATA, masked as u8);
    outb(SLAVE_DATA, (masked >> 8) as u8);
}
