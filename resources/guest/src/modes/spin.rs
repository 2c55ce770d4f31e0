//! `spin`: a ring-3 CPU loop with the PIT running at `guest.hz=` (100). Every
//! `guest.report=` (10 000 000) iterations it prints `guest: spin iter=I ticks=T` (I = total
//! iterations so far, T = timer interrupts so far); after `guest.lines=` (5) lines it powers
//! off.
//!
//! The loop itself never exits to the VMM, so timer interrupts arrive only at the serial
//! output (or when the VMM kicks the vCPU): this is the "long exit-free stretch" case.

use crate::arch::irq;
use crate::cmdline::Cmdline;
use crate::{pic, pit};

const TIMER_IRQ: u8 = 0;

pub fn run(cmdline: Cmdline) -> ! {
    let divisor = super::pit_divisor(cmdline);
    let report = super::param(cmdline, "guest.report", 10_000_000, 1..=u64::MAX);
    let lines = super::param(cmdline, "guest.lines", 5, 0..=u64::MAX);

    pic::init(pic::irq_bit(TIMER_IRQ));
    pit::start_periodic(divisor);
    let mut iter: u64 = 0;
    for _ in 0..lines {
        iter = spin(iter, report);
        println!(
            "guest: spin iter={} ticks={}",
            iter,
            irq::count(TIMER_IRQ.into())
        );
    }
    crate::exit::poweroff()
}

/// Counts from `start` up by `n` one step at a time, and returns the final value.
#[inline(never)]
fn spin(start: u64, n: u64) -> u64 {
    let mut i = start;
    let end = start.saturating_add(n);
    while i < end {
        // An empty asm statement that "may modify" `i`: the compiler must keep every
        // iteration (no closed form, no vectorisation) but the counter stays in a register.
        // SAFETY: the asm is empty.
        unsafe {
            core::arch::asm!("/* {0} */", inout(reg) i, options(nomem, nostack, preserves_flags))
        };
        i += 1;
    }
    i
}
