//! The machine the replication engine works on: KVM's vCPU, guest memory, the legacy
//! devices and the virtio transports (ft::engine::Machine).

use std::time::Instant;

use kvm_bindings::kvm_interrupt;
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use crate::devices::legacy::pit::TimerRequest;
use crate::devices::legacy::{LegacyDevices, VmClock, PIT_IRQ};
use crate::devices::virtio::ring::{self, push_used, Written};
use crate::devices::virtio::slots::VirtioDevices;
use crate::devices::virtio::QueueConfig;
use crate::event_loop::PitTimerHandle;
use crate::ft::engine::{Machine, MachineError, OutputAt};
use crate::metrics::METRICS;
use crate::stats::Stats;

// KVM_INTERRUPT (Linux Documentation/virt/kvm/api.rst 4.16): queue an external interrupt
// vector when there is no in-kernel irqchip. kvm-ioctls has no wrapper for it.
ioctl_iow_nr!(KVM_INTERRUPT, kvm_bindings::KVMIO, 0x86, kvm_interrupt);

pub struct VcpuMachine {
    pub fd: VcpuFd,
    pub mem: GuestMemoryMmap,
    pub devices: LegacyDevices,
    pub virtio: VirtioDevices,
    pub stats: Stats,
    pit_timer: PitTimerHandle,
    /// What the PIT host timer was last armed with.
    pub armed: Option<TimerRequest>,
    /// KVM's list of MSRs to save (for state transfer).
    pub msr_index: Vec<u32>,
    /// The vCPU is stopped in `hlt` and needs an interrupt to go on.
    pub halted: bool,
    /// FT backup: the state was just loaded and KVM_RUN has not run since, so kvm_run's
    /// `ready_for_interrupt_injection` says nothing yet.
    pub fresh_state: bool,
    /// When an interrupt line was raised that has not been injected yet.
    irq_raised_at: Option<Instant>,
    /// When the last interrupt was injected and its EOI not yet seen.
    pub injected_at: Option<Instant>,
    /// An interrupt was queued with KVM_INTERRUPT and KVM has not entered the guest since.
    /// KVM holds one queued interrupt: a second KVM_INTERRUPT would replace the first, whose
    /// vector the PIC already has in service, and the guest would never EOI it.
    pub injection_queued: bool,
}

impl VcpuMachine {
    pub fn new(
        fd: VcpuFd,
        mem: GuestMemoryMmap,
        devices: LegacyDevices,
        virtio: VirtioDevices,
        pit_timer: PitTimerHandle,
        msr_index: Vec<u32>,
    ) -> Self {
        VcpuMachine {
            fd,
            mem,
            devices,
            virtio,
            stats: Stats::default(),
            pit_timer,
            armed: None,
            msr_index,
            halted: false,
            fresh_state: false,
            irq_raised_at: None,
            injected_at: None,
            injection_queued: false,
        }
    }

    /// Arms the PIT's host timer with `request` (channel 0's schedule), relative to the VM
    /// clock.
    pub fn arm_pit_timer(&mut self, request: TimerRequest) {
        self.pit_timer.arm(&request, self.devices.clock.now_ns());
        self.armed = Some(request);
    }

    /// Whether KVM can take an interrupt now (`ready_for_interrupt_injection` and IF, and
    /// none queued since the last entry: those flags describe the last exit, not a queue).
    fn can_inject(&mut self) -> bool {
        let run = self.fd.get_kvm_run();
        !self.injection_queued && run.ready_for_interrupt_injection != 0 && run.if_flag != 0
    }

    /// KVM_INTERRUPT with `vector` (already acknowledged on the PIC).
    fn inject(&mut self, vector: u8) -> Result<(), MachineError> {
        let irq = kvm_interrupt {
            irq: u32::from(vector),
        };
        // SAFETY: KVM_INTERRUPT reads one `kvm_interrupt` from the pointer, which is valid
        // for the duration of the call; `fd` is a vCPU fd.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_INTERRUPT(), &irq) };
        if rc != 0 {
            return Err(MachineError::Inject(
                vector,
                std::io::Error::last_os_error(),
            ));
        }
        self.stats.interrupts_injected += 1;
        METRICS.interrupts_injected.inc();
        self.injection_queued = true;
        self.halted = false;
        if let Some(t) = self.irq_raised_at.take() {
            self.stats.irq_latency.record(t.elapsed());
        }
        self.injected_at = Some(Instant::now());
        Ok(())
    }

    /// Queue `queue` of virtio device `slot`, as the driver configured it.
    fn queue(&self, slot: usize, queue: u16) -> Result<QueueConfig, MachineError> {
        self.virtio
            .slots
            .get(slot)
            .ok_or(MachineError::NoDevice(slot))?
            .transport
            .state()
            .queues
            .get(usize::from(queue))
            .copied()
            .ok_or_else(|| MachineError::Queue {
                slot,
                queue,
                reason: "no such queue".into(),
            })
    }

    pub fn vhost_user(
        &mut self,
        n: usize,
    ) -> Option<&mut crate::devices::virtio::vhost_user::VhostUserDevice> {
        self.virtio
            .slots
            .get_mut(n)?
            .transport
            .backend_mut()
            .as_vhost_user()
    }

    /// The registers, for error reports.
    pub fn dump_registers(&self) -> String {
        let regs = match self.fd.get_regs() {
            Ok(r) => r,
            Err(e) => return format!("(registers unavailable: {e})"),
        };
        let sregs = self.fd.get_sregs().ok();
        let mut s = format!(
            "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
            regs.rip, regs.rsp, regs.rflags, regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp
        );
        if let Some(sr) = sregs {
            s.push_str(&format!(
                " cs={:#x} cpl={} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                sr.cs.selector, sr.cs.dpl, sr.cr0, sr.cr3, sr.cr4, sr.efer
            ));
        }
        s
    }
}

impl Machine for VcpuMachine {
    fn pulse_timer(&mut self, at: Instant) {
        self.devices.pic.pulse_irq(PIT_IRQ);
        self.irq_raised_at.get_or_insert(at);
    }

    fn serial_input(&mut self, bytes: &[u8]) {
        self.devices.serial.enqueue_input(bytes);
        self.devices.forward_serial_irq();
        self.irq_raised_at.get_or_insert_with(Instant::now);
    }

    fn write_memory(&mut self, gpa: u64, data: &[u8]) -> Result<(), MachineError> {
        self.mem
            .write_slice(data, GuestAddress(gpa))
            .map_err(|e| MachineError::Memory {
                gpa,
                reason: e.to_string(),
            })
    }

    fn virtio_used(&mut self, slot: usize) -> Result<(), MachineError> {
        let s = self
            .virtio
            .slots
            .get_mut(slot)
            .ok_or(MachineError::NoDevice(slot))?;
        if s.transport.signal_used() {
            self.devices.pic.pulse_irq(s.irq);
            self.irq_raised_at.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    fn complete(
        &mut self,
        slot: usize,
        queue: u16,
        head: u16,
        len: u32,
        writes: Vec<Written>,
        wrote: &mut Vec<Written>,
    ) -> Result<(), MachineError> {
        let ty = self
            .virtio
            .slots
            .get(slot)
            .map_or(0, |s| s.transport.device_type());
        // The guest-memory writes, then the used element (virtio 1.2 section 2.7.8).
        let apply = || -> Result<(), MachineError> {
            let q = self.queue(slot, queue)?;
            for w in writes {
                self.write_memory(w.gpa, &w.data)?;
                wrote.push(w);
            }
            push_used(&self.mem, &q, head, len, wrote).map_err(|e| MachineError::Queue {
                slot,
                queue,
                reason: format!("cannot write the used ring: {e}"),
            })
        };
        let done = apply();
        METRICS.completion(ty, queue, done.is_ok());
        done
    }

    fn inject_pending(&mut self) -> Result<Option<u8>, MachineError> {
        if !self.devices.pic.has_pending() || !self.can_inject() {
            return Ok(None); // stays pending until a later landmark
        }
        let Some(vector) = self.devices.pic.acknowledge() else {
            return Ok(None);
        };
        self.inject(vector)?;
        Ok(Some(vector))
    }

    fn inject_logged(&mut self, vector: u8) -> Result<(), MachineError> {
        // Right after the state transfer kvm_run's readiness flags are stale: the primary's
        // decision stands (it checked them at this very landmark).
        let ready = self.devices.pic.has_pending() && (self.fresh_state || self.can_inject());
        match self.devices.pic.acknowledge() {
            Some(v) if ready && v == vector => self.inject(vector),
            got => Err(MachineError::Vector {
                expected: vector,
                got,
                ready,
            }),
        }
    }

    fn output_digest(&self, at: OutputAt) -> Result<[u8; 32], MachineError> {
        let q = self.queue(at.slot, at.queue)?;
        ring::output_digest(&self.mem, &q, at.head).map_err(|e| MachineError::Queue {
            slot: at.slot,
            queue: at.queue,
            reason: e.to_string(),
        })
    }

    fn halted(&self) -> bool {
        self.halted
    }

    fn go_live(&mut self, clock_ns: u64) -> Result<(), MachineError> {
        let now = self.devices.clock.now_ns().max(clock_ns);
        self.devices.clock = VmClock::starting_at(now);
        self.arm_pit_timer(self.devices.pit.channel0_timer());
        for (i, slot) in self.virtio.slots.iter_mut().enumerate() {
            slot.transport
                .hold_backend(false)
                .map_err(|e| MachineError::GoLive(format!("virtio device {i}: {e}")))?;
        }
        Ok(())
    }
}
