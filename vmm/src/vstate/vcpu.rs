//! The vCPU thread's run loop: every exit that reaches userspace is a *landmark*; device
//! events are applied and interrupts injected only there (docs/ARCHITECTURE.md,
//! "Landmarks and interrupts").

use std::sync::Arc;
use std::time::Instant;

use kvm_bindings::kvm_interrupt;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use vm_memory::GuestMemoryMmap;

use super::control::Control;
use crate::devices::legacy::pit::TimerRequest;
use crate::devices::legacy::{LegacyDevices, PioAction, VmClock};
use crate::devices::virtio::slots::VirtioDevices;
use crate::event_loop::PitTimerHandle;
use crate::ft::backup::{Backup, ReplayStop};
use crate::ft::primary::Primary;
use crate::ft::record::{ExitKind, Record};
use crate::ft::signature::{hlt_sig, read_sig, write_sig};
use crate::ft::{DEV_PIT, EV_PIT_CLOCK};
use crate::inbox::Inbox;
use crate::stats::{LandmarkKind, Stats};

// KVM_INTERRUPT (Linux Documentation/virt/kvm/api.rst 4.16): queue an external interrupt
// vector when there is no in-kernel irqchip. kvm-ioctls has no wrapper for it.
ioctl_iow_nr!(KVM_INTERRUPT, kvm_bindings::KVMIO, 0x86, kvm_interrupt);

/// RFLAGS.IF (Intel SDM Vol. 1, 3.4.3).
const RFLAGS_IF: u64 = 1 << 9;

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("KVM_RUN failed: {0}")]
    Run(kvm_ioctls::Error),
    #[error("KVM_INTERRUPT failed for vector {0:#x}: {1}")]
    Interrupt(u8, std::io::Error),
    #[error("KVM could not enter the guest (hardware entry failure reason {0:#x})")]
    FailEntry(u64),
    #[error("unexpected exit from KVM: {0}")]
    UnexpectedExit(String),
}

/// Why the guest stopped running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off through the i8042.
    PowerOff,
    /// The guest wrote a failure code to port 0x501.
    GuestFailure(u8),
    /// Triple fault: KVM_EXIT_SHUTDOWN.
    TripleFault { registers: String },
    /// KVM could not emulate an instruction (suberror 1 on these machines' emulating KVM).
    InternalError { suberror: u32, registers: String },
    /// `hlt` with interrupts disabled: nothing can ever wake the vCPU (no NMI source).
    HaltedForever { registers: String },
    /// FT backup: this copy is not where the primary was.
    Diverged { landmark: u64, reason: String },
    /// FT backup: the logging channel ended inside a landmark (cannot go live there).
    PrimaryLost { landmark: u64 },
    /// FT: the arbiter gave this epoch to the other side, which is live; this side halts.
    LostArbitration { epoch: u64, owner: String },
}

impl From<ReplayStop> for VmExit {
    fn from(stop: ReplayStop) -> Self {
        match stop {
            ReplayStop::Diverged { landmark, reason } => VmExit::Diverged { landmark, reason },
            ReplayStop::PrimaryLost { landmark } => VmExit::PrimaryLost { landmark },
        }
    }
}

impl From<crate::ft::primary::LostArbitration> for VmExit {
    fn from(lost: crate::ft::primary::LostArbitration) -> Self {
        VmExit::LostArbitration {
            epoch: lost.epoch,
            owner: lost.owner,
        }
    }
}

/// The vCPU's part in fault tolerance.
pub enum FtRole {
    Off,
    Primary(Box<Primary>),
    Backup(Box<Backup>),
}

/// Signature bookkeeping for every landmark (a free function: the exit's data borrows the vCPU).
fn note_exit(ft: &mut FtRole, sig: crate::ft::record::ExitSignature) {
    match ft {
        FtRole::Off => {}
        FtRole::Primary(p) => p.on_exit(sig),
        FtRole::Backup(b) => b.on_exit(sig),
    }
}

/// Ports whose values depend on time: the PIT and port B (its channel 2 output).
fn is_pit_port(port: u16) -> bool {
    matches!(port, 0x40..=0x43 | 0x61)
}

/// Whether two timer requests fire at the same instants: equal, or periodic with the same
/// period and a phase that differs by whole periods (within 1 us of rounding).
fn same_schedule(a: &TimerRequest, b: &TimerRequest) -> bool {
    match (a, b) {
        (
            TimerRequest::Periodic {
                first_deadline_ns: f1,
                period_ns: p1,
            },
            TimerRequest::Periodic {
                first_deadline_ns: f2,
                period_ns: p2,
            },
        ) if p1 == p2 && *p1 > 0 => {
            let phase = f1.abs_diff(*f2) % p1;
            phase < 1_000 || p1 - phase < 1_000
        }
        _ => a == b,
    }
}

/// What the exit handler decided, once the borrow of the exit data has ended.
enum Outcome {
    Continue,
    Halted,
    Stop(VmExit),
    PitReprogrammed,
    Eoi,
    InternalError,
    TripleFault,
}

pub struct Vcpu {
    pub(super) fd: VcpuFd,
    pub(super) mem: GuestMemoryMmap,
    pub(super) control: Control,
    pub devices: LegacyDevices,
    pub virtio: VirtioDevices,
    pub(super) inbox: Arc<Inbox>,
    pit_timer: PitTimerHandle,
    pub stats: Stats,
    pub ft: FtRole,
    /// KVM's list of MSRs to save (for state transfer).
    pub(super) msr_index: Vec<u32>,
    /// The vCPU is stopped in `hlt` and needs an interrupt to go on.
    pub(super) halted: bool,
    /// FT backup: the state was just loaded and KVM_RUN has not run since, so kvm_run's
    /// `ready_for_interrupt_injection` says nothing yet.
    pub(super) fresh_state: bool,
    /// When an interrupt line was raised that has not been injected yet.
    pub(super) irq_raised_at: Option<Instant>,
    /// When the last interrupt was injected and its EOI not yet seen.
    injected_at: Option<Instant>,
    /// An interrupt was queued with KVM_INTERRUPT and KVM has not entered the guest since.
    /// KVM holds one queued interrupt: a second KVM_INTERRUPT would replace the first, whose
    /// vector the PIC already has in service, and the guest would never EOI it.
    injection_queued: bool,
    /// What the PIT host timer was last armed with.
    armed: Option<TimerRequest>,
}

impl Vcpu {
    pub fn new(
        fd: VcpuFd,
        mem: GuestMemoryMmap,
        devices: LegacyDevices,
        virtio: VirtioDevices,
        inbox: Arc<Inbox>,
        pit_timer: PitTimerHandle,
        ft: FtRole,
        msr_index: Vec<u32>,
    ) -> Self {
        Vcpu {
            fd,
            mem,
            control: Control::default(),
            devices,
            virtio,
            inbox,
            pit_timer,
            stats: Stats::default(),
            irq_raised_at: None,
            injected_at: None,
            injection_queued: false,
            armed: None,
            ft,
            msr_index,
            halted: false,
            fresh_state: false,
        }
    }

    /// Runs the guest until it stops. Errors are VMM/KVM failures; guest-caused stops are `VmExit`s.
    pub fn run(&mut self) -> Result<VmExit, VcpuError> {
        let result = self.run_loop();
        if let FtRole::Primary(p) = &mut self.ft {
            p.flush();
            self.stats.ft_summary = p.summary();
            if let Some(pause) = p.stats.join_pause {
                let s = self.stats.ft_summary.get_or_insert_with(String::new);
                s.push_str(&format!(" join_pause_ms={:.1}", pause.as_secs_f64() * 1e3));
            }
        }
        result
    }

    fn run_loop(&mut self) -> Result<VmExit, VcpuError> {
        loop {
            // Just after a landmark: the place where a requested pause takes effect (a backup
            // pauses inside replay_landmark, where it knows how much of the landmark it applied).
            let backup = matches!(self.ft, FtRole::Backup(_));
            if !backup && self.control.pause_due(self.stats.landmarks) {
                self.pause_loop();
            }
            self.apply_events();
            if !backup && self.control.pause_due(self.stats.landmarks) {
                continue;
            }
            if let FtRole::Backup(_) = self.ft {
                match self.replay_landmark() {
                    Ok(()) => {}
                    Err(ReplayStop::PrimaryLost { .. }) => {
                        // Everything received is applied: go live here, if the arbiter agrees.
                        if let Err(stop) = self.take_over() {
                            return Ok(stop);
                        }
                        if std::mem::take(&mut self.halted) {
                            if let Some(stop) = self.wait_for_interrupt() {
                                return Ok(stop);
                            }
                        }
                        continue;
                    }
                    Err(stop) => return Ok(stop.into()),
                }
            } else {
                self.inject_pending()?;
                if let FtRole::Primary(p) = &mut self.ft {
                    if let Err(lost) = p.check_link() {
                        return Ok(lost.into());
                    }
                    p.checkpoint(self.stats.landmarks, false);
                    p.throttle();
                    p.throttle_join();
                    p.report();
                }
            }
            match self.run_once()? {
                Outcome::Continue => {}
                Outcome::Halted if matches!(self.ft, FtRole::Backup(_)) => self.halted = true,
                Outcome::Halted => {
                    if let Some(stop) = self.wait_for_interrupt() {
                        return Ok(stop);
                    }
                }
                Outcome::Stop(stop) => return Ok(stop),
                Outcome::PitReprogrammed => {
                    // Re-arm only when the request changed: re-arming a timerfd discards an
                    // expiration the event loop has not read yet (a lost tick), and latch
                    // commands or reads of the count do not change the schedule.
                    let request = self.devices.pit.channel0_timer();
                    if !self
                        .armed
                        .as_ref()
                        .is_some_and(|a| same_schedule(a, &request))
                    {
                        self.arm_pit_timer(request);
                    }
                }
                Outcome::Eoi => {
                    if let Some(t) = self.injected_at.take() {
                        self.stats.inject_to_eoi.record(t.elapsed());
                    }
                }
                Outcome::TripleFault => {
                    return Ok(VmExit::TripleFault {
                        registers: self.dump_registers(),
                    })
                }
                Outcome::InternalError => {
                    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is
                    // the union member KVM filled in.
                    let suberror =
                        unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                    return Ok(VmExit::InternalError {
                        suberror,
                        registers: self.dump_registers(),
                    });
                }
            }
        }
    }

    /// Arms the PIT's host timer with `request` (channel 0's schedule), relative to the VM
    /// clock.
    pub(super) fn arm_pit_timer(&mut self, request: TimerRequest) {
        self.pit_timer.arm(&request, self.devices.clock.now_ns());
        self.armed = Some(request);
    }

    /// The time the PIT sees for an access at `landmark`: the clock on a primary (logged),
    /// the logged time on a backup.
    fn pit_time(ft: &mut FtRole, clock: &VmClock, landmark: u64) -> Result<u64, ReplayStop> {
        match ft {
            FtRole::Off => Ok(clock.now_ns()),
            FtRole::Primary(p) => {
                let now = clock.now_ns();
                let sig = p.last_sig;
                p.record(
                    landmark,
                    Record::DeviceEvent {
                        landmark,
                        sig,
                        device: DEV_PIT,
                        event: EV_PIT_CLOCK,
                        arg: now,
                    },
                );
                Ok(now)
            }
            FtRole::Backup(b) => match b.next_at(landmark)? {
                Some(Record::DeviceEvent {
                    sig,
                    device: DEV_PIT,
                    event: EV_PIT_CLOCK,
                    arg,
                    ..
                }) => {
                    b.check_sig(landmark, &sig)?;
                    b.last_clock_ns = arg;
                    Ok(arg)
                }
                other => Err(b.diverged(
                    landmark,
                    format!("a PIT access has no logged time (next entry: {other:?})"),
                )),
            },
        }
    }

    /// One KVM_RUN and the handling of its exit.
    fn run_once(&mut self) -> Result<Outcome, VcpuError> {
        self.fresh_state = false;
        let exit = match self.fd.run() {
            // KVM entered the guest, which took the queued interrupt on entry.
            Ok(exit) => {
                self.injection_queued = false;
                exit
            }
            // A signal interrupted KVM_RUN: not a landmark, nothing happened in the guest.
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return Ok(Outcome::Continue)
            }
            Err(e) => return Err(VcpuError::Run(e)),
        };
        let outcome = match exit {
            VcpuExit::IoIn(port, data) => {
                let landmark = self.stats.landmark(LandmarkKind::PioIn);
                note_exit(
                    &mut self.ft,
                    read_sig(ExitKind::PioIn, u64::from(port), data.len()),
                );
                if is_pit_port(port) {
                    match Self::pit_time(&mut self.ft, &self.devices.clock, landmark) {
                        Ok(now) => self.devices.pit_now = Some(now),
                        Err(stop) => return Ok(Outcome::Stop(stop.into())),
                    }
                }
                self.devices.pio_read(port, data);
                Outcome::Continue
            }
            VcpuExit::IoOut(port, data) => {
                let landmark = self.stats.landmark(LandmarkKind::PioOut);
                note_exit(
                    &mut self.ft,
                    write_sig(ExitKind::PioOut, u64::from(port), data),
                );
                if is_pit_port(port) {
                    match Self::pit_time(&mut self.ft, &self.devices.clock, landmark) {
                        Ok(now) => self.devices.pit_now = Some(now),
                        Err(stop) => return Ok(Outcome::Stop(stop.into())),
                    }
                }
                match self.devices.pio_write(port, data) {
                    PioAction::None => Outcome::Continue,
                    PioAction::PowerOff => Outcome::Stop(VmExit::PowerOff),
                    PioAction::GuestFailure(code) => Outcome::Stop(VmExit::GuestFailure(code)),
                    PioAction::PitReprogrammed => Outcome::PitReprogrammed,
                    PioAction::PicEoi => Outcome::Eoi,
                }
            }
            VcpuExit::MmioRead(addr, data) => {
                self.stats.landmark(LandmarkKind::MmioRead);
                note_exit(&mut self.ft, read_sig(ExitKind::MmioRead, addr, data.len()));
                if !self.virtio.mmio_read(addr, data) {
                    log::debug!("MMIO read of {} bytes at {addr:#x}: no device", data.len());
                    data.fill(0xff);
                }
                Outcome::Continue
            }
            VcpuExit::MmioWrite(addr, data) => {
                self.stats.landmark(LandmarkKind::MmioWrite);
                note_exit(&mut self.ft, write_sig(ExitKind::MmioWrite, addr, data));
                if !self.virtio.mmio_write(addr, data) {
                    log::debug!("MMIO write of {} bytes at {addr:#x}: no device", data.len());
                }
                Outcome::Continue
            }
            VcpuExit::Hlt => {
                self.stats.landmark(LandmarkKind::Hlt);
                note_exit(&mut self.ft, hlt_sig());
                Outcome::Halted
            }
            VcpuExit::Shutdown => Outcome::TripleFault,
            VcpuExit::InternalError => Outcome::InternalError,
            VcpuExit::FailEntry(reason, _cpu) => return Err(VcpuError::FailEntry(reason)),
            VcpuExit::Intr => Outcome::Continue,
            other => return Err(VcpuError::UnexpectedExit(format!("{other:?}"))),
        };
        Ok(outcome)
    }

    pub(super) fn vhost_user(
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

    /// Whether KVM can take an interrupt now (`ready_for_interrupt_injection` and IF, and
    /// none queued since the last entry: those flags describe the last exit, not a queue).
    pub(super) fn can_inject(&mut self) -> bool {
        let run = self.fd.get_kvm_run();
        !self.injection_queued && run.ready_for_interrupt_injection != 0 && run.if_flag != 0
    }

    /// Injects the highest-priority pending interrupt if the vCPU can take one now.
    fn inject_pending(&mut self) -> Result<(), VcpuError> {
        if !self.devices.pic.has_pending() || !self.can_inject() {
            return Ok(()); // stays pending until a later landmark
        }
        let Some(vector) = self.devices.pic.acknowledge() else {
            return Ok(());
        };
        self.inject(vector)
    }

    /// KVM_INTERRUPT with `vector` (already acknowledged on the PIC).
    pub(super) fn inject(&mut self, vector: u8) -> Result<(), VcpuError> {
        let irq = kvm_interrupt {
            irq: u32::from(vector),
        };
        // SAFETY: KVM_INTERRUPT reads one `kvm_interrupt` from the pointer, which is valid
        // for the duration of the call; `fd` is a vCPU fd.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_INTERRUPT(), &irq) };
        if rc != 0 {
            return Err(VcpuError::Interrupt(
                vector,
                std::io::Error::last_os_error(),
            ));
        }
        self.stats.interrupts_injected += 1;
        self.injection_queued = true;
        self.halted = false;
        if let FtRole::Primary(p) = &mut self.ft {
            let landmark = self.stats.landmarks;
            let sig = p.last_sig;
            p.record(
                landmark,
                Record::Interrupt {
                    landmark,
                    sig,
                    vector,
                },
            );
        }
        if let Some(t) = self.irq_raised_at.take() {
            self.stats.irq_latency.record(t.elapsed());
        }
        self.injected_at = Some(Instant::now());
        Ok(())
    }

    /// After a `hlt`: blocks until an interrupt can be delivered. Returns a stop reason if none
    /// ever can.
    fn wait_for_interrupt(&mut self) -> Option<VmExit> {
        if self.fd.get_kvm_run().if_flag == 0 {
            let rflags = self.fd.get_regs().map(|r| r.rflags).unwrap_or(0);
            if rflags & RFLAGS_IF == 0 {
                return Some(VmExit::HaltedForever {
                    registers: self.dump_registers(),
                });
            }
        }
        loop {
            self.apply_events();
            if self.control.pause_due(self.stats.landmarks) {
                self.pause_loop();
                continue;
            }
            if self.devices.pic.has_pending() {
                return None;
            }
            if let FtRole::Primary(p) = &mut self.ft {
                if let Err(lost) = p.check_link() {
                    return Some(lost.into());
                }
                p.checkpoint(self.stats.landmarks, true);
                p.flush();
            }
            self.inbox.wait();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_requests_with_whole_period_offsets_are_the_same_schedule() {
        let a = TimerRequest::Periodic {
            first_deadline_ns: 10_000_150,
            period_ns: 10_000_150,
        };
        let b = TimerRequest::Periodic {
            first_deadline_ns: 30_000_451,
            period_ns: 10_000_150,
        };
        let c = TimerRequest::Periodic {
            first_deadline_ns: 15_000_000,
            period_ns: 10_000_150,
        };
        let d = TimerRequest::Periodic {
            first_deadline_ns: 10_000_150,
            period_ns: 1_000_000,
        };
        assert!(same_schedule(&a, &b));
        assert!(!same_schedule(&a, &c), "different phase");
        assert!(!same_schedule(&a, &d), "different period");
        assert!(!same_schedule(&a, &TimerRequest::Disarmed));
        assert!(same_schedule(
            &TimerRequest::Disarmed,
            &TimerRequest::Disarmed
        ));
    }
}
