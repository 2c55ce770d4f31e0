//! Initial vCPU state for the 64-bit Linux boot protocol (Linux `Documentation/arch/x86/boot.rst`,
//! "64-bit Boot Protocol"): long mode with paging, an identity map covering the kernel, flat
//! `__BOOT_CS`/`__BOOT_DS` segments, interrupts off and `RSI` pointing at the zero page.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::{boot_gdt, kvm_segment_from_gdt, CODE_INDEX, DATA_INDEX, TSS_INDEX};
use super::layout::*;

/// Errors while setting up the boot vCPU state.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write the boot {0} into guest memory")]
    WriteMemory(&'static str),
    #[error("KVM refused the {0} state: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    #[error("KVM accepted only {0} of the boot MSRs")]
    Msrs(usize),
}

// Control register and EFER bits (Intel SDM Vol. 3A, 2.5 "Control Registers" and 2.2.1).
const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_MP: u64 = 1 << 1;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_NE: u64 = 1 << 5;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

// MSRs reset at boot, as other VMMs do (Intel SDM Vol. 4).
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1;

/// x87 control word after `FNINIT` and the MXCSR reset value (Intel SDM Vol. 1, 8.1.5, 10.2.3).
const FPU_FCW: u16 = 0x37f;
const MXCSR_DEFAULT: u32 = 0x1f80;

/// General-purpose registers at the kernel entry.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2, // bit 1 is reserved and always set; IF clear
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

/// Writes the boot GDT, an empty IDT and identity-mapping page tables (1 GiB with 2 MiB pages)
/// into guest memory, and returns sregs that enter long mode with them.
pub fn boot_sregs(mem: &GuestMemoryMmap, mut sregs: kvm_sregs) -> Result<kvm_sregs, RegsError> {
    let gdt = boot_gdt();
    for (i, entry) in gdt.iter().enumerate() {
        let addr = GuestAddress(BOOT_GDT_START).unchecked_add(i as u64 * 8);
        mem.write_obj(*entry, addr)
            .map_err(|_| RegsError::WriteMemory("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| RegsError::WriteMemory("IDT"))?;

    let code = kvm_segment_from_gdt(gdt[CODE_INDEX as usize], CODE_INDEX);
    let data = kvm_segment_from_gdt(gdt[DATA_INDEX as usize], DATA_INDEX);
    let tss = kvm_segment_from_gdt(gdt[TSS_INDEX as usize], TSS_INDEX);
    sregs.gdt.base = BOOT_GDT_START;
    // A handful of 8-byte descriptors: the limit fits the 16-bit GDTR field.
    sregs.gdt.limit = u16::try_from(std::mem::size_of_val(&gdt) - 1).unwrap_or(u16::MAX);
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    write_page_tables(mem)?;
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_MP | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    Ok(sregs)
}

/// PML4[0] -> PDPT[0] -> PD with 512 2-MiB pages: an identity map of [0, 1 GiB)
/// (Intel SDM Vol. 3A, 4.5 "4-Level Paging").
fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    const PRESENT_RW: u64 = 0x3;
    const PAGE_SIZE_2M: u64 = 0x80;
    let err = |_| RegsError::WriteMemory("page tables");
    mem.write_obj(PDPTE_START | PRESENT_RW, GuestAddress(PML4_START))
        .map_err(err)?;
    mem.write_obj(PDE_START | PRESENT_RW, GuestAddress(PDPTE_START))
        .map_err(err)?;
    for i in 0..512u64 {
        let entry = (i << 21) | PAGE_SIZE_2M | PRESENT_RW;
        mem.write_obj(entry, GuestAddress(PDE_START + i * 8))
            .map_err(err)?;
    }
    Ok(())
}

/// The MSR values a freshly booted CPU should have.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    let zeroed = [
        MSR_IA32_SYSENTER_CS,
        MSR_IA32_SYSENTER_ESP,
        MSR_IA32_SYSENTER_EIP,
        MSR_STAR,
        MSR_CSTAR,
        MSR_KERNEL_GS_BASE,
        MSR_SYSCALL_MASK,
        MSR_LSTAR,
        MSR_IA32_TSC,
    ];
    let mut msrs: Vec<kvm_msr_entry> = zeroed
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            data: 0,
            ..Default::default()
        })
        .collect();
    msrs.push(kvm_msr_entry {
        index: MSR_IA32_MISC_ENABLE,
        data: MSR_IA32_MISC_ENABLE_FAST_STRING,
        ..Default::default()
    });
    msrs
}

/// Loads the complete boot state into `vcpu`.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, mem: &GuestMemoryMmap, entry: u64) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: FPU_FCW,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|e| RegsError::Kvm("FPU", e))?;

    let msrs = boot_msrs();
    let wanted = msrs.len();
    let msrs = Msrs::from_entries(&msrs).map_err(|_| RegsError::Msrs(0))?;
    let set = vcpu.set_msrs(&msrs).map_err(|e| RegsError::Kvm("MSR", e))?;
    if set != wanted {
        return Err(RegsError::Msrs(set));
    }

    let sregs = vcpu.get_sregs().map_err(|e| RegsError::Kvm("sregs", e))?;
    let sregs = boot_sregs(mem, sregs)?;
    vcpu.set_sregs(&sregs)
        .map_err(|e| RegsError::Kvm("sregs", e))?;
    vcpu.set_regs(&boot_regs(entry))
        .map_err(|e| RegsError::Kvm("regs", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("guest memory")
    }

    #[test]
    fn sregs_enter_long_mode_with_identity_map() {
        let m = mem();
        let sregs = boot_sregs(&m, kvm_sregs::default()).expect("sregs");
        assert_eq!(sregs.cr3, PML4_START);
        assert_ne!(sregs.cr0 & X86_CR0_PG, 0);
        assert_ne!(sregs.cr0 & X86_CR0_PE, 0);
        assert_ne!(sregs.cr4 & X86_CR4_PAE, 0);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(sregs.cs.selector, 0x10);
        assert_eq!(sregs.ds.selector, 0x18);
        let pml4: u64 = m.read_obj(GuestAddress(PML4_START)).expect("pml4");
        assert_eq!(pml4, PDPTE_START | 3);
        // The PD entry for 0x3fe0_0000 (page 511) maps that address with a 2 MiB page.
        let pde: u64 = m.read_obj(GuestAddress(PDE_START + 511 * 8)).expect("pde");
        assert_eq!(pde, (511 << 21) | 0x83);
        let gdt2: u64 = m.read_obj(GuestAddress(BOOT_GDT_START + 16)).expect("gdt");
        assert_eq!(gdt2, boot_gdt()[2]);
    }

    #[test]
    fn regs_point_at_entry_and_zero_page() {
        let regs = boot_regs(0x10_0000);
        assert_eq!(regs.rip, 0x10_0000);
        assert_eq!(regs.rsi, ZERO_PAGE_START);
        assert_eq!(regs.rflags & 0x200, 0, "interrupts must be off at entry");
    }
}
