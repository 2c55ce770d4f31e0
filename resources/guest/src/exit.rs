//! Ending the guest: power-off or a failure code for the VMM (GUEST-ABI.md).

use crate::arch::port::outb;
use crate::arch::syscall::idle;

/// i8042 command port; command 0xFE pulses the CPU reset line, which the VMM treats as
/// power-off (`vmm` exits 0).
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;

/// Guest failure port: writing byte N makes `vmm` exit with status 5, reporting code N.
const FAILURE_PORT: u16 = 0x501;

/// Failure codes written to the failure port.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum Failure {
    /// Invalid `guest.*` option (unknown mode, malformed number) or, in the kv mode, a
    /// missing or unusable device, a bad disk or a disk I/O error.
    Setup = 1,
    /// Unexpected CPU exception: written by the ring-0 shim (boot.S), listed for reference.
    #[allow(dead_code)]
    Exception = 3,
    /// Rust panic.
    Panic = 4,
}

/// Powers the VM off.
pub fn poweroff() -> ! {
    outb(I8042_COMMAND, I8042_RESET);
    halt_forever()
}

/// Reports a failure to the VMM, which stops the VM.
pub fn fail(failure: Failure) -> ! {
    outb(FAILURE_PORT, failure as u8);
    halt_forever()
}

/// Reached only if the VMM ignored the request above: wait without burning CPU (ring 3 may
/// not execute `hlt` itself).
fn halt_forever() -> ! {
    loop {
        idle();
    }
}
