//! `fault`: reads an unmapped address from ring 3. The shim maps only 0-8 GiB, so the read
//! raises #PF (vector 0x0e, error 0x0004: user-mode read of a not-present page); the ring-0
//! reporter prints `guest: exception vector=0x0e error=0x0004 rip=...` and writes failure
//! code 3.

use crate::cmdline::Cmdline;

/// First address above the shim's identity map.
const UNMAPPED: usize = 0x2_0000_0000;

pub fn run(_cmdline: Cmdline) -> ! {
    crate::pic::init(0);
    // SAFETY: deliberately invalid: the read never completes, the exception ends the guest.
    unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
    unreachable!("the read of {UNMAPPED:#x} did not fault")
}
