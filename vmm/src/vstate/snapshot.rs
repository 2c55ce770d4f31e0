//! Capturing and restoring the machine for a state transfer (ft::join::Snapshot) and for
//! snapshot files (persist::file). The vCPU's state needs KVM (`VcpuState`); the rest is
//! the KVM-free parts' `Persist` states, which `MachineState` aggregates.

use std::path::Path;

use vm_memory::GuestMemoryMmap;

use super::machine::VcpuMachine;
use crate::ft::engine::Trace;
use crate::ft::join::{sig_parts, RestoreError, Snapshot};
use crate::ft::precopy::JoinError;
use crate::ft::state::{MachineState, VcpuState};
use crate::persist::file::{self, SnapshotError};
use crate::persist::Persist;

impl VcpuMachine {
    /// An `in` or MMIO read is finished by KVM only on the next KVM_RUN (it copies the data
    /// userspace left in kvm_run into the register then). Until that happens the registers
    /// still point at the instruction, and a backup loading them would execute it again.
    /// KVM_RUN with `immediate_exit` set completes the pending operation and returns EINTR
    /// without running the guest (Linux Documentation/virt/kvm/api.rst, "immediate_exit").
    fn complete_pending_io(&mut self) -> Result<(), JoinError> {
        self.fd.set_kvm_immediate_exit(1);
        let result = self.fd.run().map(|_| ());
        self.fd.set_kvm_immediate_exit(0);
        match result {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Ok(()) => Err(JoinError::Kvm(
                "KVM_RUN with immediate_exit ran the guest".into(),
            )),
            Err(e) => Err(JoinError::Kvm(format!(
                "cannot complete the pending I/O: {e}"
            ))),
        }
    }
}

impl Snapshot for VcpuMachine {
    fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    fn capture(&mut self, trace: &Trace) -> Result<(VcpuState, MachineState), JoinError> {
        self.complete_pending_io()?;
        let vcpu = VcpuState::capture(&self.fd, &self.msr_index)?;
        let machine = MachineState {
            landmark: trace.landmark,
            signature_hash: trace.hash.0,
            last_sig: sig_parts(&trace.last_sig),
            legacy: self.devices.save(),
            virtio: self.virtio.save(),
        };
        Ok((vcpu, machine))
    }

    fn restore(&mut self, vcpu: &VcpuState, m: &MachineState) -> Result<(), RestoreError> {
        vcpu.restore(&self.fd)?;
        self.devices.reload(&m.legacy)?;
        self.virtio.reload(&m.virtio)?;
        self.fresh_state = true;
        Ok(())
    }
}

impl VcpuMachine {
    /// Writes a snapshot file of the machine, stopped at the landmark `trace` describes
    /// (the control socket's `snapshot`). The state is captured as for a join, pending I/O
    /// completion included, so a snapshot of a primary and one of its backup at the same
    /// landmark compare equal. Returns the file's size.
    pub fn write_snapshot(&mut self, path: &Path, trace: &Trace) -> Result<u64, SnapshotError> {
        if !path.is_absolute() {
            return Err(SnapshotError::Relative(path.to_path_buf()));
        }
        let (vcpu, machine) = self.capture(trace).map_err(SnapshotError::Capture)?;
        file::write(path, &vcpu, &machine, &self.mem)
    }
}
