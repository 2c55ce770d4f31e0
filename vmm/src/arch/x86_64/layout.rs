//! Guest physical memory layout.
//!
//! ```text
//! 0x0000_0500  boot GDT            (arch::x86_64::gdt)
//! 0x0000_0520  boot IDT (empty)
//! 0x0000_7000  zero page (boot params)
//! 0x0000_8ff0  boot stack top
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000 PD (identity map of the first 1 GiB)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  EBDA: end of low usable memory
//! 0x0010_0000  kernel (ELF segments or bzImage protected-mode code)
//! ...          initrd at the top of low RAM
//! 0xc000_0000  start of the MMIO gap (virtio-mmio devices), up to 4 GiB
//! 0x1_0000_0000 RAM above the gap, when the guest has more than 3 GiB
//! ```
//! The addresses of the boot structures follow the conventions of other KVM VMMs
//! (Firecracker, cloud-hypervisor) so that Linux finds everything where it expects it.

pub const BOOT_GDT_START: u64 = 0x500;
pub const BOOT_IDT_START: u64 = 0x520;
pub const ZERO_PAGE_START: u64 = 0x7000;
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
pub const CMDLINE_START: u64 = 0x20000;
/// Maximum size of the command line, including the terminating NUL.
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Start of the Extended BIOS Data Area; low memory usable by the guest ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// Kernels are loaded from 1 MiB (the Linux "high memory" start).
pub const HIMEM_START: u64 = 0x10_0000;
/// Start and size of the hole below 4 GiB reserved for MMIO devices.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Address that KVM needs for the real-mode TSS on Intel hosts (three pages inside the gap).
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// The RAM ranges `(start, size)` of a guest with `mem_size` bytes: below the MMIO gap, and
/// the rest above 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (MMIO_GAP_END, mem_size - MMIO_GAP_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
    }

    #[test]
    fn large_guest_skips_the_mmio_gap() {
        let ranges = ram_ranges(4 << 30);
        assert_eq!(
            ranges,
            vec![
                (0, MMIO_GAP_START),
                (MMIO_GAP_END, (4 << 30) - MMIO_GAP_START)
            ]
        );
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        assert_eq!(total, 4 << 30);
    }
}
