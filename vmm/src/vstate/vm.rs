//! The KVM VM: created WITHOUT an in-kernel irqchip or PIT (see the determinism contract in
//! docs/ARCHITECTURE.md), with one memory slot per guest RAM region.

use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::KVM_TSS_ADDRESS;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("more guest memory regions than KVM has slots")]
    TooManyRegions,
    #[error(
        "cannot open /dev/kvm: {0} (the VMM needs read/write access to /dev/kvm, usually root)"
    )]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    #[error("cannot create the VM: {0}")]
    CreateVm(kvm_ioctls::Error),
    #[error("cannot set the TSS address: {0}")]
    Tss(kvm_ioctls::Error),
    #[error("cannot register guest memory with KVM: {0}")]
    MemorySlot(kvm_ioctls::Error),
    #[error("cannot create the vCPU: {0}")]
    CreateVcpu(kvm_ioctls::Error),
    #[error("cannot set the vCPU's CPUID: {0}")]
    Cpuid(kvm_ioctls::Error),
}

pub struct Vm {
    kvm: Kvm,
    /// Shared with the FT dirty log (ft::dirty), which reads and toggles KVM's dirty bitmaps
    /// from the pre-copy thread.
    fd: Arc<VmFd>,
}

/// CPUID leaf 1 EDX bit 9: on-chip APIC. There is no local APIC without an in-kernel irqchip,
/// so the guest must not look for one (Intel SDM Vol. 2A, CPUID, table 3-11).
const CPUID_1_EDX_APIC: u32 = 1 << 9;

impl Vm {
    pub fn new(mem: &GuestMemoryMmap) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(VmError::ApiVersion(version));
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        // Intel VMX needs three pages for the real-mode TSS; put them in the MMIO gap.
        fd.set_tss_address(KVM_TSS_ADDRESS).map_err(VmError::Tss)?;
        for (slot, region) in mem.iter().enumerate() {
            let kvm_region = kvm_userspace_memory_region {
                // One slot per RAM region (at most two, below and above the MMIO gap).
                slot: u32::try_from(slot).map_err(|_| VmError::TooManyRegions)?,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region's host mapping lives as long as `mem`, which the Vmm keeps
            // alive for the whole life of the VM, and the slots do not overlap.
            unsafe { fd.set_user_memory_region(kvm_region) }.map_err(VmError::MemorySlot)?;
        }
        Ok(Vm {
            kvm,
            fd: Arc::new(fd),
        })
    }

    /// The VM fd, for the FT dirty log.
    pub fn fd(&self) -> Arc<VmFd> {
        self.fd.clone()
    }

    /// Makes KVM signal `kick` instead of exiting when the guest writes `value` (4 bytes) to
    /// `addr` (a virtio-mmio QueueNotify register).
    pub fn register_kick(
        &self,
        kick: &vmm_sys_util::eventfd::EventFd,
        addr: u64,
        value: u32,
    ) -> Result<(), kvm_ioctls::Error> {
        self.fd
            .register_ioevent(kick, &kvm_ioctls::IoEventAddress::Mmio(addr), value)
    }

    /// The MSRs KVM can save and restore (for state transfer).
    pub fn msr_index(&self) -> Vec<u32> {
        self.kvm
            .get_msr_index_list()
            .map(|l| l.as_slice().to_vec())
            .unwrap_or_default()
    }

    /// Creates vCPU `id` with the host's supported CPUID, minus the local APIC.
    pub fn create_vcpu(&self, id: u64) -> Result<VcpuFd, VmError> {
        let vcpu = self.fd.create_vcpu(id).map_err(VmError::CreateVcpu)?;
        let mut cpuid = self
            .kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::Cpuid)?;
        for entry in cpuid.as_mut_slice() {
            if entry.function == 1 {
                entry.edx &= !CPUID_1_EDX_APIC;
            }
        }
        vcpu.set_cpuid2(&cpuid).map_err(VmError::Cpuid)?;
        Ok(vcpu)
    }
}
