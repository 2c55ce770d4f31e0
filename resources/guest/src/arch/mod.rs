//! x86-64 specifics: the ring-0 shim and the ring-3 primitives that talk to it or to the
//! hardware.
//!
//! Privilege split (see boot.S): ring 0 only sets up the CPU, counts interrupts and halts;
//! everything else runs in ring 3, which can use `in`/`out` thanks to the all-zero I/O
//! permission bitmap of the TSS, and calls ring 0 with `int3` (see `syscall`).

mod boot;
pub mod irq;
pub mod port;
pub mod syscall;
