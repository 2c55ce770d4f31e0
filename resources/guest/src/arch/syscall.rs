//! Ring 3 -> ring 0 services through the DPL-3 `int3` gate (GUEST-ABI.md, "Guest-internal
//! ABI"). `int3` is used because on these machines `syscall` does not reach ring 0 and
//! `int n` from ring 3 raises #UD. The service number is passed in RAX.
//!
//! `nostack` is correct: the gate switches to the TSS RSP0 stack (a privilege change), so
//! nothing is pushed below the ring-3 stack pointer and the red zone survives.

use core::arch::asm;

const SERVICE_IDLE: u64 = 0;
const SERVICE_TRIPLE_FAULT: u64 = 1;

/// Halts until one interrupt has been handled (`sti; hlt; cli` in ring 0).
///
/// Interrupts are delivered only at VMM exits, and `hlt` is one: this is how the guest waits
/// for the PIT. Returns immediately after the first interrupt's ring-0 stub ran, so callers
/// loop on their condition. Never returns if every IRQ is masked and none is pending.
#[inline]
pub fn idle() {
    // SAFETY: the service only halts; the memory clobber (no `nomem`) makes the caller reread
    // IRQ_COUNT afterwards.
    unsafe { asm!("int3", inlateout("rax") SERVICE_IDLE => _, options(nostack)) }
}

/// Makes ring 0 triple-fault the CPU: the VMM sees `KVM_EXIT_SHUTDOWN`.
pub fn triple_fault() -> ! {
    // SAFETY: does not return.
    unsafe { asm!("int3", in("rax") SERVICE_TRIPLE_FAULT, options(noreturn, nostack)) }
}
