//! What a backup needs to become a copy of the primary at one landmark: the vCPU's
//! architectural state, the device models' state and the VM clock. Guest memory travels
//! separately, in chunks (ft::precopy). Blobs are JSON (serde) in a state envelope
//! (persist::envelope: magic, version, length, checksum) inside the log records, so that a
//! foreign or corrupted blob, or one of another format version, is refused before parsing.

use kvm_bindings::{
    kvm_debugregs, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs,
    kvm_xsave, Msrs,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use crate::devices::legacy::LegacyState;
use crate::devices::virtio::mmio::MmioState;
use crate::persist::envelope::{self, EnvelopeError};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {0} the vCPU state: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    #[error("KVM returned {got} of {wanted} MSRs when restoring")]
    Msrs { got: usize, wanted: usize },
    #[error("state blob: {0}")]
    Blob(#[from] serde_json::Error),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// The vCPU state KVM exposes (the same set Firecracker snapshots; FPU/SSE state is in xsave).
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debug_regs: kvm_debugregs,
    pub mp_state: kvm_mp_state,
    pub vcpu_events: kvm_vcpu_events,
    pub msrs: Vec<kvm_msr_entry>,
}

impl VcpuState {
    /// Reads the state; `msr_index` is KVM's list of MSRs to save.
    pub fn capture(fd: &VcpuFd, msr_index: &[u32]) -> Result<Self, StateError> {
        let k = |what| move |e| StateError::Kvm(what, e);
        let entries: Vec<kvm_msr_entry> = msr_index
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| StateError::Msrs {
            got: 0,
            wanted: entries.len(),
        })?;
        let n = fd.get_msrs(&mut msrs).map_err(k("read MSRs of"))?;
        Ok(VcpuState {
            regs: fd.get_regs().map_err(k("read regs of"))?,
            sregs: fd.get_sregs().map_err(k("read sregs of"))?,
            xsave: fd.get_xsave().map_err(k("read xsave of"))?,
            xcrs: fd.get_xcrs().map_err(k("read xcrs of"))?,
            debug_regs: fd.get_debug_regs().map_err(k("read debug regs of"))?,
            mp_state: fd.get_mp_state().map_err(k("read mp state of"))?,
            vcpu_events: fd.get_vcpu_events().map_err(k("read events of"))?,
            msrs: msrs.as_slice()[..n].to_vec(),
        })
    }

    /// Loads the state into `fd`. Order as in other VMMs: sregs before regs (mode), MSRs,
    /// then events and mp state last.
    pub fn restore(&self, fd: &VcpuFd) -> Result<(), StateError> {
        let k = |what| move |e| StateError::Kvm(what, e);
        fd.set_sregs(&self.sregs).map_err(k("restore sregs of"))?;
        fd.set_regs(&self.regs).map_err(k("restore regs of"))?;
        // SAFETY: the xsave area was produced by KVM_GET_XSAVE on a vCPU of the same kind
        // (same CPUID, same host); KVM validates the header.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(k("restore xsave of"))?;
        fd.set_xcrs(&self.xcrs).map_err(k("restore xcrs of"))?;
        fd.set_debug_regs(&self.debug_regs)
            .map_err(k("restore debug regs of"))?;
        // KVM_SET_MSRS stops at the first MSR it refuses (some readable MSRs, e.g. read-only
        // feature MSRs, cannot be written): skip that one and go on with the rest.
        let mut rest: &[kvm_msr_entry] = &self.msrs;
        while !rest.is_empty() {
            let msrs = Msrs::from_entries(rest).map_err(|_| StateError::Msrs {
                got: 0,
                wanted: rest.len(),
            })?;
            let n = fd.set_msrs(&msrs).map_err(k("restore MSRs of"))?;
            if n < rest.len() {
                log::debug!("MSR {:#x} not restorable; skipped", rest[n].index);
                rest = &rest[n + 1..];
            } else {
                rest = &[];
            }
        }
        fd.set_vcpu_events(&self.vcpu_events)
            .map_err(k("restore events of"))?;
        fd.set_mp_state(self.mp_state)
            .map_err(k("restore mp state of"))?;
        Ok(())
    }
}

/// Everything else the guest can observe, at the landmark of the transfer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachineState {
    pub landmark: u64,
    /// Running hash of every landmark signature so far (ft::signature).
    pub signature_hash: u64,
    /// The signature of the landmark the transfer happened at: (kind, addr, size, data).
    pub last_sig: (u8, u64, u8, u64),
    /// The PIC, PIT, UART and VM clock (`clock_ns`: the backup's clock continues from it).
    #[serde(flatten)]
    pub legacy: LegacyState,
    /// One register file per virtio-mmio transport, in slot order.
    pub virtio: Vec<MmioState>,
}

/// Largest blob a join carries: a `DeviceState` record's (ft::record::MAX_DATA).
pub const MAX_BLOB: u64 = crate::ft::record::MAX_DATA as u64;

/// `value` as JSON in an envelope with `magic` (persist::envelope).
pub fn to_blob<T: Serialize>(magic: &[u8; 8], value: &T) -> Result<Vec<u8>, StateError> {
    Ok(envelope::seal(magic, &serde_json::to_vec(value)?))
}

/// The value in an envelope with `magic` of at most `MAX_BLOB` bytes.
pub fn from_blob<T: for<'de> Deserialize<'de>>(
    magic: &[u8; 8],
    blob: &[u8],
) -> Result<T, StateError> {
    Ok(serde_json::from_slice(envelope::open(
        magic, MAX_BLOB, blob,
    )?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupted_blobs_are_errors() {
        use envelope::{seal, MAGIC_MACHINE, MAGIC_VCPU};
        let bad = |b: &[u8]| from_blob::<MachineState>(&MAGIC_MACHINE, b);
        assert!(matches!(
            bad(&seal(&MAGIC_MACHINE, b"{\"landmark\":")),
            Err(StateError::Blob(_))
        ));
        assert!(matches!(
            bad(&seal(&MAGIC_MACHINE, b"[1,2]")),
            Err(StateError::Blob(_))
        ));
        assert!(matches!(
            bad(b"{\"landmark\":1}"),
            Err(StateError::Envelope(_))
        ));
        assert!(matches!(
            bad(&seal(&MAGIC_VCPU, b"{}")),
            Err(StateError::Envelope(EnvelopeError::Magic { .. }))
        ));
    }
}
