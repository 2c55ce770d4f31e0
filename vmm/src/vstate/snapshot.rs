//! Capturing and restoring the machine for a state transfer (ft::join::Snapshot).

use vm_memory::GuestMemoryMmap;

use super::machine::VcpuMachine;
use crate::devices::legacy::pic::Pic;
use crate::devices::legacy::pit::Pit;
use crate::devices::legacy::VmClock;
use crate::ft::engine::Trace;
use crate::ft::join::{sig_parts, Snapshot};
use crate::ft::precopy::JoinError;
use crate::ft::state::{MachineState, VcpuState};

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
            clock_ns: self.devices.clock.now_ns(),
            signature_hash: trace.hash.0,
            last_sig: sig_parts(&trace.last_sig),
            pic: self.devices.pic.state(),
            pit: self.devices.pit.state(),
            uart: self.devices.serial.state(),
            virtio: self
                .virtio
                .slots
                .iter()
                .map(|s| s.transport.state().clone())
                .collect(),
        };
        Ok((vcpu, machine))
    }

    fn restore(&mut self, vcpu: &VcpuState, m: &MachineState) -> Result<(), String> {
        vcpu.restore(&self.fd).map_err(|e| e.to_string())?;
        self.devices.pic = Pic::restore(&m.pic);
        self.devices.pit = Pit::restore(&m.pit);
        self.devices
            .serial
            .restore(&m.uart)
            .map_err(|e| format!("serial state: {e}"))?;
        self.devices.clock = VmClock::starting_at(m.clock_ns);
        for (slot, state) in self.virtio.slots.iter_mut().zip(m.virtio.iter()) {
            slot.transport.restore_state(state.clone());
        }
        self.fresh_state = true;
        Ok(())
    }
}
