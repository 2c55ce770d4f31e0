//! The vCPU thread's run loop: every exit that reaches userspace is a *landmark*; host
//! events are handed to the replication engine and interrupts injected only there
//! (docs/ARCHITECTURE.md, "Landmarks and interrupts"). What the engine does with them
//! depends on its role; this loop does not know the role.

use std::sync::Arc;

use kvm_ioctls::VcpuExit;

use super::control::Control;
use super::machine::VcpuMachine;
use crate::devices::legacy::pit::TimerRequest;
use crate::devices::legacy::PioAction;
use crate::ft::engine::{
    hlt_sig, read_sig, write_sig, Engine, EngineStop, ExitKind, MachineError, Step,
};
use crate::inbox::Inbox;
use crate::stats::LandmarkKind;

/// RFLAGS.IF (Intel SDM Vol. 1, 3.4.3).
const RFLAGS_IF: u64 = 1 << 9;

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("KVM_RUN failed: {0}")]
    Run(kvm_ioctls::Error),
    #[error(transparent)]
    Machine(#[from] MachineError),
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

impl From<EngineStop> for VmExit {
    fn from(stop: EngineStop) -> Self {
        match stop {
            EngineStop::Diverged { landmark, reason } => VmExit::Diverged { landmark, reason },
            EngineStop::PrimaryLost { landmark } => VmExit::PrimaryLost { landmark },
            EngineStop::LostArbitration { epoch, owner } => {
                VmExit::LostArbitration { epoch, owner }
            }
        }
    }
}

/// Ports whose values depend on time: the PIT and port B (its channel 2 output).
fn is_pit_port(port: u16) -> bool {
    matches!(port, 0x40..=0x43 | 0x61)
}

/// A port access at this exit: if it reaches the PIT, the time the PIT sees comes from the
/// engine (the clock on a primary, which logs it; the log on a backup).
fn pit_clock(
    engine: &mut Engine,
    devices: &mut crate::devices::legacy::LegacyDevices,
    port: u16,
) -> Result<(), EngineStop> {
    if is_pit_port(port) {
        devices.pit_now = Some(engine.clock_read(|| devices.clock.now_ns())?);
    }
    Ok(())
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

/// Where the vCPU thread is. Each state decides what an inbox message does (`dispatch`) and
/// what happens next (`run_loop`).
pub(super) enum State {
    /// At a landmark: host events applied, the engine's turn, then KVM_RUN.
    Running,
    /// In `hlt` (plain VM, primary): until an event makes an interrupt deliverable.
    Halted,
    /// Backup: the log does not tell yet whether the landmark has more entries (the vCPU
    /// blocks after the next dispatch, if the log is still empty then).
    AwaitingLog,
    /// Backup whose primary is lost: the arbiter is being asked.
    Arbitrating(crate::ft::failover::Arbitration),
    /// Stopped at a landmark until `resume`; then back to the state inside.
    Paused(Box<State>),
}

impl State {
    fn may_pause(&self) -> bool {
        !matches!(self, State::Paused(_) | State::Arbitrating(_))
    }
}

pub struct Vcpu {
    pub machine: VcpuMachine,
    pub engine: Engine,
    pub(super) control: Control,
    pub(super) inbox: Arc<Inbox>,
}

impl Vcpu {
    pub fn new(machine: VcpuMachine, engine: Engine, inbox: Arc<Inbox>) -> Self {
        Vcpu {
            machine,
            engine,
            control: Control::default(),
            inbox,
        }
    }

    /// Runs the guest until it stops. Errors are VMM/KVM failures; guest-caused stops are `VmExit`s.
    pub fn run(&mut self) -> Result<VmExit, VcpuError> {
        let result = self.run_loop();
        self.machine.stats.ft_summary = self.engine.finish();
        self.machine.stats.landmarks = self.engine.landmark();
        result
    }

    /// The vCPU's state machine: one dispatcher for the inbox (`dispatch`), one place that
    /// blocks (`inbox.wait`), and per state what happens next.
    fn run_loop(&mut self) -> Result<VmExit, VcpuError> {
        let mut state = State::Running;
        loop {
            self.engine.publish_metrics();
            // A pause takes effect just after a landmark, before its host events: what the
            // engine applies from here on is in the log after the pause point, on both sides.
            if state.may_pause() && self.control.pause_due(self.engine.landmark()) {
                state = self.enter_pause(state);
            }
            self.dispatch(&state);
            if state.may_pause() && self.control.pause_due(self.engine.landmark()) {
                continue; // a pause request among the events
            }
            let (next, block) = match state {
                State::Running => match self.landmark()? {
                    Ok(next) => (next, false),
                    Err(stop) => return Ok(stop),
                },
                State::Halted if self.machine.devices.pic.has_pending() => (State::Running, false),
                State::Halted => match self.engine.before_block() {
                    Ok(()) => (State::Halted, true),
                    Err(stop) => return Ok(stop.into()),
                },
                // The dispatch above may have taken the `FtWake` of records queued since the
                // replayer found the log empty: block only if it is still empty (the reader
                // posts a new `FtWake` for the first record it queues into an empty log).
                State::AwaitingLog => (State::Running, self.engine.log_empty()),
                State::Arbitrating(arbitration) => match arbitration.verdict() {
                    None => (State::Arbitrating(arbitration), true),
                    Some(verdict) => {
                        let asked = arbitration.started;
                        if let Err(stop) =
                            self.engine
                                .go_live(&mut self.machine, verdict, asked, &self.inbox)
                        {
                            return Ok(stop.into());
                        }
                        match std::mem::take(&mut self.machine.halted) {
                            true => match self.enter_halted() {
                                Ok(halted) => (halted, false),
                                Err(stop) => return Ok(stop),
                            },
                            false => (State::Running, false),
                        }
                    }
                },
                State::Paused(back) if self.control.paused() => (State::Paused(back), true),
                State::Paused(back) => {
                    self.leave_pause();
                    (*back, false)
                }
            };
            state = next;
            if block {
                self.inbox.wait();
            }
        }
    }

    /// At a landmark: the engine's turn, then the guest runs to the next exit.
    fn landmark(&mut self) -> Result<Result<State, VmExit>, VcpuError> {
        match self.engine.at_landmark(&mut self.machine)? {
            Step::Run => {}
            Step::AwaitLog => return Ok(Ok(State::AwaitingLog)),
            Step::PrimaryLost => {
                // Everything received is applied: go live here, if the arbiter agrees.
                return Ok(Ok(match self.engine.arbitrate(&self.inbox) {
                    Some(arbitration) => State::Arbitrating(arbitration),
                    None => State::Running,
                }));
            }
            Step::Stop(stop) => return Ok(Err(stop.into())),
        }
        let next = match self.run_once()? {
            Outcome::Continue => State::Running,
            // A backup's log says which interrupt ends the `hlt`, and where.
            Outcome::Halted if !self.engine.hlt_waits_for_host() => {
                self.machine.halted = true;
                State::Running
            }
            Outcome::Halted => match self.enter_halted() {
                Ok(halted) => halted,
                Err(stop) => return Ok(Err(stop)),
            },
            Outcome::Stop(stop) => return Ok(Err(stop)),
            Outcome::PitReprogrammed => {
                // Re-arm only when the request changed: re-arming a timerfd discards an
                // expiration the event loop has not read yet (a lost tick), and latch
                // commands or reads of the count do not change the schedule.
                let request = self.machine.devices.pit.channel0_timer();
                if !self
                    .machine
                    .armed
                    .as_ref()
                    .is_some_and(|a| same_schedule(a, &request))
                {
                    self.machine.arm_pit_timer(request);
                }
                State::Running
            }
            Outcome::Eoi => {
                if let Some(t) = self.machine.injected_at.take() {
                    self.machine.stats.inject_to_eoi.record(t.elapsed());
                }
                State::Running
            }
            Outcome::TripleFault => {
                return Ok(Err(VmExit::TripleFault {
                    registers: self.machine.dump_registers(),
                }))
            }
            Outcome::InternalError => {
                // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is
                // the union member KVM filled in.
                let suberror = unsafe {
                    self.machine
                        .fd
                        .get_kvm_run()
                        .__bindgen_anon_1
                        .internal
                        .suberror
                };
                return Ok(Err(VmExit::InternalError {
                    suberror,
                    registers: self.machine.dump_registers(),
                }));
            }
        };
        Ok(Ok(next))
    }

    /// After a `hlt`: the vCPU waits for an interrupt, unless none can ever come.
    fn enter_halted(&mut self) -> Result<State, VmExit> {
        let m = &mut self.machine;
        if m.fd.get_kvm_run().if_flag == 0 {
            let rflags = m.fd.get_regs().map(|r| r.rflags).unwrap_or(0);
            if rflags & RFLAGS_IF == 0 {
                return Err(VmExit::HaltedForever {
                    registers: m.dump_registers(),
                });
            }
        }
        Ok(State::Halted)
    }

    /// One KVM_RUN and the handling of its exit.
    fn run_once(&mut self) -> Result<Outcome, VcpuError> {
        let m = &mut self.machine;
        m.fresh_state = false;
        let exit = match m.fd.run() {
            // KVM entered the guest, which took the queued interrupt on entry.
            Ok(exit) => {
                m.injection_queued = false;
                exit
            }
            // A signal interrupted KVM_RUN: not a landmark, nothing happened in the guest.
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return Ok(Outcome::Continue)
            }
            Err(e) => return Err(VcpuError::Run(e)),
        };
        let engine = &mut self.engine;
        let (devices, virtio, stats) = (&mut m.devices, &mut m.virtio, &mut m.stats);
        let outcome = match exit {
            VcpuExit::IoIn(port, data) => {
                stats.count(LandmarkKind::PioIn);
                engine.exit(read_sig(ExitKind::PioIn, u64::from(port), data.len()));
                if let Err(stop) = pit_clock(engine, devices, port) {
                    return Ok(Outcome::Stop(stop.into()));
                }
                devices.pio_read(port, data);
                Outcome::Continue
            }
            VcpuExit::IoOut(port, data) => {
                stats.count(LandmarkKind::PioOut);
                engine.exit(write_sig(ExitKind::PioOut, u64::from(port), data));
                if let Err(stop) = pit_clock(engine, devices, port) {
                    return Ok(Outcome::Stop(stop.into()));
                }
                match devices.pio_write(port, data) {
                    PioAction::None => Outcome::Continue,
                    PioAction::PowerOff => Outcome::Stop(VmExit::PowerOff),
                    PioAction::GuestFailure(code) => Outcome::Stop(VmExit::GuestFailure(code)),
                    PioAction::PitReprogrammed => Outcome::PitReprogrammed,
                    PioAction::PicEoi => Outcome::Eoi,
                }
            }
            VcpuExit::MmioRead(addr, data) => {
                stats.count(LandmarkKind::MmioRead);
                engine.exit(read_sig(ExitKind::MmioRead, addr, data.len()));
                if !virtio.mmio_read(addr, data) {
                    log::debug!("MMIO read of {} bytes at {addr:#x}: no device", data.len());
                    data.fill(0xff);
                }
                Outcome::Continue
            }
            VcpuExit::MmioWrite(addr, data) => {
                stats.count(LandmarkKind::MmioWrite);
                engine.exit(write_sig(ExitKind::MmioWrite, addr, data));
                if !virtio.mmio_write(addr, data) {
                    log::debug!("MMIO write of {} bytes at {addr:#x}: no device", data.len());
                }
                Outcome::Continue
            }
            VcpuExit::Hlt => {
                stats.count(LandmarkKind::Hlt);
                engine.exit(hlt_sig());
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
