//! The test guest: a tiny OS for the VMM's tests (GUEST-ABI.md).
//!
//! Ring 0 is a small assembly shim (src/arch/boot.S): descriptor tables, page tables,
//! interrupt stubs, an `int3` system-call gate. It drops to ring 3 at once and calls
//! `guest_main`, so that all of this Rust code runs natively in ring 3 (on the development
//! machines ring 0 is emulated, ~1000x slower). Ring 3 uses port I/O directly (TSS I/O
//! bitmap) and asks ring 0 only to idle (`hlt`) or to triple-fault.
//!
//! Layout: `arch` (CPU, ring-0 interface), device drivers (`serial`, `pic`, `pit`,
//! `virtio`), boot information (`bootparams`, `cmdline`), `modes` (one module per
//! `guest.mode=`), `exit` (power-off, failure codes), `mem` (the C memory functions the
//! compiler needs), `heap` (the allocator), `clock` (PIT ticks), `net` (smoltcp glue and the
//! kv server's TCP side). Pure logic (RESP, commands, the disk log, command-line parsing) is
//! in the library crate `guestlib` (src/lib.rs), unit-tested on the host.

#![no_std]
#![no_main]

extern crate alloc;

#[macro_use]
mod serial;

mod arch;
mod bootparams;
mod clock;
mod cmdline;
mod exit;
mod heap;
mod mem;
mod modes;
mod net;
mod pic;
mod pit;
mod virtio;

use bootparams::BootParams;
use cmdline::Cmdline;
use core::panic::PanicInfo;

/// Ring-3 entry, called by `user_entry` (src/arch/boot.rs) with the zero-page address the
/// VMM passed in RSI.
#[no_mangle]
pub extern "C" fn guest_main(zero_page: usize) -> ! {
    serial::init();
    // SAFETY: the boot protocol guarantees RSI pointed at the boot parameters.
    let params = unsafe { BootParams::new(zero_page) };
    heap::init(&params);
    modes::run(Cmdline::new(params.cmdline()))
}

/// Prints the panic on COM1 and reports failure code 4.
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    match info.location() {
        Some(loc) => println!(
            "guest: panic at {}:{}: {}",
            loc.file(),
            loc.line(),
            info.message()
        ),
        None => println!("guest: panic: {}", info.message()),
    }
    exit::fail(exit::Failure::Panic)
}

/// Never called (panic = "abort"), but the precompiled libcore, built for unwinding,
/// references the symbol; without LTO (debug builds) the link would fail.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
