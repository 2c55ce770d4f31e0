//! `ticks`: PIT channel 0 in mode 2 at `guest.hz=` (100); idles in `hlt` until `guest.ticks=`
//! (100) timer interrupts were handled, prints `guest: ticks=N` and powers off.

use crate::arch::{irq, syscall::idle};
use crate::cmdline::Cmdline;
use crate::{pic, pit};

const TIMER_IRQ: u8 = 0;

pub fn run(cmdline: Cmdline) -> ! {
    let divisor = super::pit_divisor(cmdline);
    let ticks = super::param(cmdline, "guest.ticks", 100, 0..=u64::MAX);

    pic::init(pic::irq_bit(TIMER_IRQ));
    pit::start_periodic(divisor);
    // Each idle() returns after exactly one interrupt (only IRQ 0 is unmasked), and nothing
    // between two idles exits to the VMM, so N comes out equal to guest.ticks.
    while irq::count(TIMER_IRQ.into()) < ticks {
        idle();
    }
    println!("guest: ticks={}", irq::count(TIMER_IRQ.into()));
    crate::exit::poweroff()
}
