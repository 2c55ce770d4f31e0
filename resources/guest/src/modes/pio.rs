//! `pio`: `guest.count=` (100 000) byte writes to port 0x80 (POST/delay port, ignored by the
//! VMM: a pure exit-cost benchmark), then prints `guest: pio done count=N` and powers off.

use crate::arch::port::outb;
use crate::cmdline::Cmdline;

const POST_PORT: u16 = 0x80;

pub fn run(cmdline: Cmdline) -> ! {
    let count = super::param(cmdline, "guest.count", 100_000, 0..=u64::MAX);
    crate::pic::init(0);
    for i in 0..count {
        outb(POST_PORT, i as u8);
    }
    println!("guest: pio done count={count}");
    crate::exit::poweroff()
}
