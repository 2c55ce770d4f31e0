//! The replication engine: the one boundary through which non-determinism enters the guest.
//!
//! # The determinism contract
//!
//! The guest's vCPU is deterministic between two *landmarks*. A landmark is an exit that
//! reaches this VMM: a port or MMIO access, or `hlt`. Landmarks are numbered 1, 2, 3, ... in
//! the order the vCPU takes them, and each has a *signature* (exit kind, port or address,
//! size, data written). The engine owns that numbering and the [`Trace`]: the landmark count,
//! the running hash of every signature, and the last signature.
//!
//! Everything that is not a function of the guest's memory and registers is an [`Input`], and
//! an input enters the guest only at a landmark, through the engine:
//!
//! | input | where it comes from | when it is applied |
//! |---|---|---|
//! | [`Input::ClockRead`] | the VM clock, read by a PIT access | inside that exit |
//! | [`Input::TimerTick`] | the PIT's host timerfd (event loop) | at the next landmark |
//! | [`Input::SerialInput`] | bytes typed on the console (event loop) | at the next landmark |
//! | [`Input::MemWrite`] | a backend's completion, and the used ring the VMM writes for it | at the next landmark |
//! | [`Input::VirtioUsed`] | a backend's used-buffer signal | at the next landmark |
//! | [`Input::Interrupt`] | the PIC's choice, when KVM can take a vector | before the vCPU enters the guest |
//! | [`Input::Output`] | a backend's output announcement (its SHA-256) | checked, never applied |
//! | [`Input::Checkpoint`] | the running hash, when the log has been quiet | checked, never applied |
//!
//! Nothing else may change what the guest sees: no device reads the host clock except
//! through [`Engine::clock_read`], and the event loop never touches device state (it posts
//! to the inbox, and the vCPU thread hands each host event to the engine at a landmark).
//! CPUID, the TSC and RDRAND are not intercepted on these machines (docs/ARCHITECTURE.md,
//! "What is not captured"); the test guest does not use them.
//!
//! # Three engines
//!
//! - [`Engine::Plain`]: no FT. Inputs are applied as they come; the trace is kept.
//! - [`Engine::Recorder`] (primary): each input is applied and logged as an [`Entry`]
//!   (landmark, that exit's signature, input) to the backup ([`LogSink`]).
//! - [`Engine::Replayer`] (backup): host events are dropped; the inputs come from the log
//!   ([`LogSource`]), landmark by landmark, and each entry's signature, vector, output
//!   digest and checkpoint hash is checked against this copy's own execution.
//!
//! Going live turns the replayer into a recorder that goes on with the same trace. The vCPU
//! thread (vstate) calls the hooks below and never looks at the role.

mod dispatch;
pub mod input;
pub mod machine;
pub mod recorder;
pub mod replayer;
pub mod trace;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

/// What identifies an exit (the vCPU builds one at every landmark).
pub use crate::ft::record::{ExitKind, ExitSignature};
pub use crate::ft::signature::{hlt_sig, read_sig, write_sig};
pub use dispatch::{Engine, Step};
pub use input::{Entry, Input, OutputAt};
pub use machine::{LogSink, LogSource, Machine, MachineError, Peek};
pub use recorder::Recorder;
pub use replayer::{Replayed, Replayer};
pub use trace::Trace;

/// Why the engine stops the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineStop {
    /// Backup: this copy is not where the primary was.
    Diverged { landmark: u64, reason: String },
    /// Backup: the logging channel is gone (the primary died, or the network failed).
    PrimaryLost { landmark: u64 },
    /// The arbiter gave `epoch` to the other side, which is live; this side halts.
    LostArbitration { epoch: u64, owner: String },
}
