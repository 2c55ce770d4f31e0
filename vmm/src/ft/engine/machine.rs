//! What the engine works on and talks to: the machine it applies inputs to, the log a
//! replayer reads and the log a recorder writes. The VMM's implementations are KVM's vCPU
//! (vstate::machine), the backup's receive queue (ft::backup) and the primary's logging
//! channel (ft::primary); the engine's unit tests use fakes of all three.

use std::time::Instant;

use crate::devices::virtio::ring::Written;
use crate::ft::record::Record;

use super::input::OutputAt;
use super::EngineStop;

/// Why the machine could not apply an input.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("guest memory write at {gpa:#x}: {reason}")]
    Memory { gpa: u64, reason: String },
    #[error("no virtio device in slot {0}")]
    NoDevice(usize),
    #[error("virtio device {slot} queue {queue}: {reason}")]
    Queue {
        slot: usize,
        queue: u16,
        reason: String,
    },
    #[error("expected interrupt vector {expected:#x}, got {got:?} (ready: {ready})")]
    Vector {
        expected: u8,
        got: Option<u8>,
        ready: bool,
    },
    #[error("KVM_INTERRUPT failed for vector {0:#x}: {1}")]
    Inject(u8, std::io::Error),
    #[error("{0}")]
    GoLive(String),
}

/// The machine the inputs are applied to: devices, guest memory and the vCPU's interrupt
/// line. Each method is one kind of input (docs in `Input`).
pub trait Machine {
    /// PIT channel 0 expired at `at` (for the interrupt-latency statistics).
    fn pulse_timer(&mut self, at: Instant);
    fn serial_input(&mut self, bytes: &[u8]);
    fn write_memory(&mut self, gpa: u64, data: &[u8]) -> Result<(), MachineError>;
    fn virtio_used(&mut self, slot: usize) -> Result<(), MachineError>;
    /// Applies a backend's completion: its `writes`, then the used element. Every write
    /// made to guest memory is appended to `wrote`, also when it fails half-way.
    fn complete(
        &mut self,
        slot: usize,
        queue: u16,
        head: u16,
        len: u32,
        writes: Vec<Written>,
        wrote: &mut Vec<Written>,
    ) -> Result<(), MachineError>;
    /// Delivers the highest-priority pending interrupt if the vCPU can take one now, and
    /// returns its vector.
    fn inject_pending(&mut self) -> Result<Option<u8>, MachineError>;
    /// Delivers `vector` where the primary did: this copy's PIC must choose the same vector
    /// and the vCPU must be able to take it.
    fn inject_logged(&mut self, vector: u8) -> Result<(), MachineError>;
    /// SHA-256 of the bytes of the output chain at `at`.
    fn output_digest(&self, at: OutputAt) -> Result<[u8; 32], MachineError>;
    /// The vCPU stopped in `hlt` and waits for an interrupt.
    fn halted(&self) -> bool;
    /// A backup goes live: its clock goes on from `clock_ns`, its timer and its backends
    /// start.
    fn go_live(&mut self, clock_ns: u64) -> Result<(), MachineError>;
}

/// What the front of a replayer's log holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    /// A landmark entry for this landmark.
    Entry(u64),
    /// A record that is not an entry (skipped).
    Other,
    /// Nothing yet; more may come.
    Empty,
    /// Nothing, and nothing ever will: the logging channel is gone.
    Closed,
}

/// The log a replayer reads, in the primary's order.
pub trait LogSource {
    fn peek(&self) -> Peek;
    fn pop(&mut self) -> Option<Record>;
    /// Blocks until `peek` is not `Empty`.
    fn wait(&self);
    /// Tells the primary (a divergence report).
    fn report(&self, record: &Record);
    /// The landmark the replayer has reached (the primary sees it in heartbeats).
    fn reached(&self, _landmark: u64) {}
}

/// The log a recorder writes.
pub trait LogSink {
    /// Whether a backup receives the entries now.
    fn connected(&self) -> bool;
    /// Queues an entry; false if nothing was sent (no backup).
    fn send(&mut self, landmark: u64, record: Record) -> bool;
    /// Logs output `id` of virtio device `slot`, to be released once the backup has the log
    /// up to it (at once when no backup could take over); false if nothing was sent.
    fn send_output(&mut self, landmark: u64, record: Record, slot: usize, id: u64) -> bool;
    /// The VMM wrote guest memory that KVM's dirty log does not see (pre-copy sends it).
    fn wrote(&self, _gpa: u64, _len: usize) {}
    /// Hands what is queued to the channel (before the vCPU runs or blocks).
    fn flush(&mut self) {}
    /// At each landmark: notices a lost backup and applies the arbiter's verdict.
    fn check(&mut self) -> Result<(), EngineStop> {
        Ok(())
    }
    /// At each landmark before the guest runs: flow control, join throttle, reports.
    fn pace(&mut self) {}
}
