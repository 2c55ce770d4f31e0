//! Port I/O. From ring 3 every `in`/`out` exits to the VMM (a "landmark", at which the VMM may
//! also inject a pending interrupt). Allowed in ring 3 because the TSS I/O permission bitmap
//! is all zero (SDM Vol. 1 19.5).
//!
//! Not `nomem`: a port access must stay ordered with the surrounding memory accesses (e.g. a
//! device notification after filling a buffer).

use core::arch::asm;

/// Writes a byte to an I/O port.
#[inline]
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory-safety impact on this program; the devices are the VMM's.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nostack, preserves_flags)) }
}

/// Reads a byte from an I/O port.
#[inline]
#[allow(dead_code)] // not used by the current modes; drivers will need it
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nostack, preserves_flags)) }
    value
}
