//! `triple`: asks ring 0 for a triple fault (the VMM sees `KVM_EXIT_SHUTDOWN`, exit status 3).

use crate::cmdline::Cmdline;

pub fn run(_cmdline: Cmdline) -> ! {
    crate::pic::init(0);
    crate::arch::syscall::triple_fault()
}
