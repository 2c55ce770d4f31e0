//! What a backup needs to become a copy of the primary at one landmark: the vCPU's
//! architectural state, the device models' state and the VM clock. Guest memory travels
//! separately, in chunks (ft::transfer). Blobs are JSON (serde) inside the log records, so a
//! newer VMM can tell a field it does not know from a corrupted blob.

use kvm_bindings::{
    kvm_debugregs, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs,
    kvm_xsave, Msrs,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};
use vm_superio::serial::SerialState;

use crate::devices::legacy::pic::PicState;
use crate::devices::legacy::pit::PitState;
use crate::devices::virtio::mmio::MmioState;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {0} the vCPU state: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    #[error("KVM returned {got} of {wanted} MSRs when restoring")]
    Msrs { got: usize, wanted: usize },
    #[error("state blob: {0}")]
    Blob(#[from] serde_json::Error),
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

/// vm-superio's `SerialState` has no serde support: serde's remote derive serializes it
/// through this copy of its (public) fields.
#[derive(Serialize, Deserialize)]
#[serde(remote = "SerialState")]
struct SerialStateDef {
    baud_divisor_low: u8,
    baud_divisor_high: u8,
    interrupt_enable: u8,
    interrupt_identification: u8,
    line_control: u8,
    line_status: u8,
    modem_control: u8,
    modem_status: u8,
    scratch: u8,
    in_buffer: Vec<u8>,
}

/// Everything else the guest can observe, at the landmark of the transfer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachineState {
    pub landmark: u64,
    /// The primary's VM clock (ns) at the transfer; the backup's clock continues from it.
    pub clock_ns: u64,
    /// Running hash of every landmark signature so far (ft::signature).
    pub signature_hash: u64,
    /// The signature of the landmark the transfer happened at: (kind, addr, size, data).
    pub last_sig: (u8, u64, u8, u64),
    pub pic: PicState,
    pub pit: PitState,
    #[serde(with = "SerialStateDef")]
    pub uart: SerialState,
    pub virtio: Vec<MmioState>,
}

pub fn to_blob<T: Serialize>(value: &T) -> Result<Vec<u8>, StateError> {
    Ok(serde_json::to_vec(value)?)
}

pub fn from_blob<T: for<'de> Deserialize<'de>>(blob: &[u8]) -> Result<T, StateError> {
    Ok(serde_json::from_slice(blob)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uart_state_round_trips() {
        #[derive(Serialize, Deserialize)]
        struct Wrapper(#[serde(with = "SerialStateDef")] SerialState);
        let s = SerialState {
            baud_divisor_low: 1,
            baud_divisor_high: 2,
            interrupt_enable: 3,
            interrupt_identification: 4,
            line_control: 5,
            line_status: 6,
            modem_control: 7,
            modem_status: 8,
            scratch: 9,
            in_buffer: vec![10, 11],
        };
        let back: Wrapper = from_blob(&to_blob(&Wrapper(s.clone())).expect("blob")).expect("parse");
        assert_eq!(back.0, s);
    }

    #[test]
    fn corrupted_blobs_are_errors() {
        assert!(from_blob::<MachineState>(b"{\"landmark\":").is_err());
        assert!(from_blob::<MachineState>(b"[1,2]").is_err());
    }
}
