//! The primary's engine: every input is applied to the machine and logged as an entry
//! tagged with its landmark and that exit's signature. Without a backup the sink drops the
//! entries; the trace is kept all the same, so that a backup can join at any landmark.

use std::time::{Duration, Instant};

use super::input::{Entry, Input, OutputAt};
use super::machine::{LogSink, Machine, MachineError};
use super::trace::Trace;
use super::Step;
use crate::devices::virtio::ring::Written;
use crate::ft::record::MAX_SERIAL;

/// How often, at most, a landmark goes by without an entry: the backup may only run up to
/// the newest landmark it has an entry for, so this bounds its lag while the log is quiet.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1);

pub struct Recorder<S> {
    pub sink: S,
    pub trace: Trace,
    last_entry_landmark: u64,
    last_entry_at: Instant,
}

impl<S: LogSink> Recorder<S> {
    /// A recorder that goes on from `trace` (a new primary starts from the default trace; a
    /// backup going live from the one it replayed).
    pub fn new(sink: S, trace: Trace) -> Self {
        Recorder {
            sink,
            trace,
            last_entry_landmark: 0,
            last_entry_at: Instant::now(),
        }
    }

    /// Logs `input` at the current landmark.
    pub fn record(&mut self, input: Input) {
        if !self.sink.connected() {
            return;
        }
        let entry = Entry {
            landmark: self.trace.landmark,
            sig: Some(self.trace.last_sig),
            input,
        };
        match entry.to_record() {
            Ok(record) => {
                if self.sink.send(entry.landmark, record) {
                    self.sent(entry.landmark);
                }
            }
            // The backup will diverge at this landmark: it is missing an input.
            Err(e) => log::error!(
                "ft: cannot log an input at landmark {}: {e}",
                entry.landmark
            ),
        }
    }

    /// An entry went to the backup: no checkpoint is due before the log is quiet again.
    fn sent(&mut self, landmark: u64) {
        self.last_entry_landmark = landmark;
        self.last_entry_at = Instant::now();
    }

    pub fn clock_read(&mut self, now: u64) -> u64 {
        self.record(Input::ClockRead { ns: now });
        now
    }

    pub fn timer_tick(&mut self, m: &mut impl Machine, at: Instant) {
        m.pulse_timer(at);
        self.record(Input::TimerTick);
    }

    pub fn serial_input(&mut self, m: &mut impl Machine, bytes: &[u8]) {
        m.serial_input(bytes);
        for batch in bytes.chunks(MAX_SERIAL) {
            self.record(Input::SerialInput(batch.to_vec()));
        }
    }

    pub fn virtio_used(&mut self, m: &mut impl Machine, slot: usize) -> Result<(), MachineError> {
        m.virtio_used(slot)?;
        self.record(Input::VirtioUsed { slot });
        Ok(())
    }

    /// A backend's completion: its memory writes, the used element and the interrupt, all at
    /// this landmark and all logged.
    pub fn completion(
        &mut self,
        m: &mut impl Machine,
        slot: usize,
        (queue, head, len): (u16, u16, u32),
        writes: Vec<Written>,
    ) -> Result<(), MachineError> {
        let mut wrote = Vec::with_capacity(writes.len() + 2);
        let result = m.complete(slot, queue, head, len, writes, &mut wrote);
        for w in &wrote {
            self.sink.wrote(w.gpa, w.data.len());
        }
        result?;
        for w in wrote {
            self.record(Input::MemWrite {
                gpa: w.gpa,
                data: w.data,
            });
        }
        self.virtio_used(m, slot)
    }

    /// An output announced by a backend: logged with its digest; the sink releases it.
    pub fn output(&mut self, at: OutputAt, id: u64, digest: [u8; 32]) {
        let entry = Entry {
            landmark: self.trace.landmark,
            sig: None,
            input: Input::Output { at, digest },
        };
        match entry.to_record() {
            Ok(record) => {
                if self.sink.send_output(entry.landmark, record, at.slot, id) {
                    self.sent(entry.landmark);
                }
            }
            Err(e) => log::error!("ft: output {id} not logged, so never released: {e}"),
        }
    }

    /// Injects a pending interrupt if the vCPU can take one, and logs it.
    pub fn inject(&mut self, m: &mut impl Machine) -> Result<(), MachineError> {
        if let Some(vector) = m.inject_pending()? {
            self.record(Input::Interrupt { vector });
        }
        Ok(())
    }

    /// The running hash as a checkpoint entry: lets the backup run up to this landmark and
    /// check every landmark before it. Sent when the log has been quiet, or when `force`d
    /// (before the primary blocks in `hlt` or pauses).
    pub fn checkpoint(&mut self, force: bool) {
        let landmark = self.trace.landmark;
        if !self.sink.connected() || landmark == self.last_entry_landmark && !force {
            return;
        }
        if force || self.last_entry_at.elapsed() >= CHECKPOINT_EVERY {
            self.record(Input::Checkpoint {
                hash: self.trace.hash.0,
            });
        }
    }

    /// Before the vCPU enters the guest.
    pub fn before_run(&mut self, m: &mut impl Machine) -> Result<Step, MachineError> {
        self.inject(m)?;
        if let Err(stop) = self.sink.check() {
            return Ok(Step::Stop(stop));
        }
        self.checkpoint(false);
        self.sink.pace();
        Ok(Step::Run)
    }

    /// Before the vCPU blocks (in `hlt`, or paused): the backup gets everything up to here.
    pub fn sync(&mut self) {
        self.checkpoint(true);
        self.sink.flush();
    }
}

/// The sink of a VM without FT: nothing is ever connected, so nothing is logged.
pub struct NoBackup;

impl LogSink for NoBackup {
    fn connected(&self) -> bool {
        false
    }

    fn send(&mut self, _landmark: u64, _record: crate::ft::record::Record) -> bool {
        false
    }

    fn send_output(&mut self, _: u64, _: crate::ft::record::Record, _: usize, _: u64) -> bool {
        false
    }
}
