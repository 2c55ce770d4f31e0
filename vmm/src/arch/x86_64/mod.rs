//! x86_64 boot support: guest physical layout, the zero page (boot params + E820), the boot
//! GDT and page tables, and the initial vCPU register state for the 64-bit Linux boot protocol.
pub mod boot_params;
pub mod gdt;
pub mod layout;
pub mod regs;
