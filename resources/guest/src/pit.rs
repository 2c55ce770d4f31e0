//! 8254 programmable interval timer, channel 0 (IRQ 0). Reference: Intel 8254 datasheet,
//! "Control Word Format" and "Mode 2 - Rate Generator".

use crate::arch::port::outb;

/// Input clock of the PC's 8254: 1.193182 MHz.
pub const INPUT_HZ: u32 = 1_193_182;

const CHANNEL0_DATA: u16 = 0x40;
const COMMAND: u16 = 0x43;

/// Control word: SC = 00 (channel 0), RW = 11 (low byte then high byte), M = 010 (mode 2,
/// rate generator: one pulse every `divisor` input clocks), BCD = 0 (binary).
const CHANNEL0_LOHI_MODE2: u8 = 0x34; // 00 11 010 0

/// Reload value for a rate of `hz` interrupts per second (rounded to the nearest), or `None`
/// if the 16-bit counter cannot produce that rate (hz < 19 or hz > INPUT_HZ).
pub fn divisor(hz: u32) -> Option<u16> {
    if hz == 0 {
        return None;
    }
    let d = (INPUT_HZ + hz / 2) / hz;
    // 0 would mean 65536 to the 8254; keep to the unambiguous range.
    u16::try_from(d).ok().filter(|&d| d != 0)
}

/// Starts periodic interrupts on IRQ 0 with the given reload value (see `divisor`).
pub fn start_periodic(divisor: u16) {
    let [lo, hi] = divisor.to_le_bytes();
    outb(COMMAND, CHANNEL0_LOHI_MODE2);
    outb(CHANNEL0_DATA, lo);
    outb(CHANNEL0_DATA, hi);
}
