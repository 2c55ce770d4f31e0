//! Interrupt counters kept by the ring-0 IRQ stubs (boot.S).

use core::ptr::{addr_of, read_volatile};

/// Number of IRQ lines of the 8259A pair.
pub const IRQ_LINES: usize = 16;

extern "C" {
    /// Per-IRQ-line counters, incremented by the ring-0 stubs (defined in boot.S).
    static IRQ_COUNT: [u64; IRQ_LINES];
}

/// How many times IRQ line `irq` (0-15) has been handled so far.
///
/// A volatile read: the counter changes behind the compiler's back (in an interrupt handler).
/// An aligned 64-bit load is atomic, and the single vCPU increments it only between ring-3
/// instructions.
pub fn count(irq: usize) -> u64 {
    assert!(irq < IRQ_LINES, "no IRQ line {irq}");
    // SAFETY: IRQ_COUNT is a valid, aligned static; only ring 0 writes it.
    unsafe { read_volatile(addr_of!(IRQ_COUNT[irq])) }
}
