//! The backup's engine: applies the primary's log entries landmark by landmark, in the
//! primary's order, checking each against this copy's own execution.
//!
//! The backup may leave landmark L only once its log holds an entry for a later landmark:
//! only then does it know that it has every entry for L (the log is in landmark order). So
//! it always lags at least one entry behind, as the VMware FT design requires.

use super::input::{Entry, Input};
use super::machine::{LogSource, Machine, Peek};
use super::trace::Trace;
use super::EngineStop;
use crate::ft::record::{ExitSignature, Record};
use crate::ft::signature::describe;

/// Where a landmark's replay got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// Every entry for the landmark is applied: the vCPU may run to the next one.
    Done,
    /// The log does not tell yet whether the landmark has more entries: wait and ask again.
    NeedLog,
}

pub struct Replayer<S> {
    pub log: S,
    pub trace: Trace,
    /// Records taken from the log.
    pub applied: u64,
    /// The newest VM clock value the log gave (PIT accesses): going live continues from it.
    pub last_clock_ns: u64,
}

fn hex(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

impl<S: LogSource> Replayer<S> {
    pub fn new(log: S, trace: Trace) -> Self {
        Replayer {
            log,
            trace,
            applied: 0,
            last_clock_ns: 0,
        }
    }

    pub fn landmark(&self) -> u64 {
        self.trace.landmark
    }

    /// Reports a divergence to the primary and returns the stop.
    pub fn diverged(&self, reason: String) -> EngineStop {
        let landmark = self.trace.landmark;
        self.log.report(&Record::Diverged {
            landmark,
            reason: reason.chars().take(1000).collect(),
        });
        EngineStop::Diverged { landmark, reason }
    }

    fn pop(&mut self) -> Option<Record> {
        self.applied += 1;
        self.log.pop()
    }

    /// The next entry for the current landmark, without blocking: `Ok(None)` when the log
    /// does not tell yet, `Ok(Some(None))` once the landmark is complete.
    fn poll(&mut self) -> Result<Option<Option<Entry>>, EngineStop> {
        let landmark = self.trace.landmark;
        loop {
            let l = match self.log.peek() {
                Peek::Closed => return Err(EngineStop::PrimaryLost { landmark }),
                Peek::Empty => return Ok(None),
                Peek::Other => {
                    self.pop();
                    continue;
                }
                Peek::Entry(l) => l,
            };
            if l > landmark {
                return Ok(Some(None));
            }
            let record = self.pop();
            if l < landmark {
                return Err(
                    self.diverged(format!("entry for past landmark {l} left over: {record:?}"))
                );
            }
            let Some(record) = record else { continue };
            return match Entry::from_record(record) {
                Ok(entry) => Ok(Some(Some(entry))),
                Err(e) => Err(self.diverged(format!("unexpected entry: {e}"))),
            };
        }
    }

    /// Like `poll`, blocking until the log tells.
    fn next(&mut self) -> Result<Option<Entry>, EngineStop> {
        loop {
            if let Some(e) = self.poll()? {
                return Ok(e);
            }
            self.log.wait();
        }
    }

    fn check_sig(&self, expected: &Option<ExitSignature>) -> Result<(), EngineStop> {
        match expected {
            Some(sig) if *sig != self.trace.last_sig => Err(self.diverged(format!(
                "expected {}, got {}",
                describe(sig),
                describe(&self.trace.last_sig)
            ))),
            _ => Ok(()),
        }
    }

    /// Inside a PIT access: the time the primary's PIT saw at this exit (blocks until the
    /// log has it).
    pub fn clock_read(&mut self) -> Result<u64, EngineStop> {
        match self.next()? {
            Some(Entry {
                sig,
                input: Input::ClockRead { ns },
                ..
            }) => {
                self.check_sig(&sig)?;
                self.last_clock_ns = ns;
                Ok(ns)
            }
            other => Err(self.diverged(format!(
                "a PIT access has no logged time (next entry: {other:?})"
            ))),
        }
    }

    /// Applies the log's entries for the current landmark.
    pub fn replay(&mut self, m: &mut impl Machine) -> Result<Replayed, EngineStop> {
        self.log.reached(self.trace.landmark);
        loop {
            match self.poll()? {
                None => return Ok(Replayed::NeedLog),
                Some(None) => break,
                Some(Some(entry)) => self.apply(m, entry)?,
            }
        }
        if m.halted() {
            let sig = describe(&self.trace.last_sig);
            return Err(self.diverged(format!("{sig} but the primary injected no interrupt here")));
        }
        Ok(Replayed::Done)
    }

    fn apply(&mut self, m: &mut impl Machine, entry: Entry) -> Result<(), EngineStop> {
        self.check_sig(&entry.sig)?;
        let applied = match entry.input {
            Input::ClockRead { .. } => {
                let msg = "a logged PIT time where this copy made no PIT access (a PIT access on the primary only?)";
                return Err(self.diverged(msg.into()));
            }
            Input::TimerTick => {
                m.pulse_timer(std::time::Instant::now());
                Ok(())
            }
            Input::SerialInput(bytes) => {
                m.serial_input(&bytes);
                Ok(())
            }
            Input::MemWrite { gpa, data } => m.write_memory(gpa, &data),
            Input::VirtioUsed { slot } => m.virtio_used(slot),
            Input::Interrupt { vector } => m.inject_logged(vector),
            Input::Output { at, digest } => {
                let own = m.output_digest(at).map_err(|e| {
                    self.diverged(format!(
                        "output chain {}/{}/{}: {e}",
                        at.slot, at.queue, at.head
                    ))
                })?;
                if own != digest {
                    return Err(self.diverged(format!(
                        "output of device {} queue {} (chain {}) differs: expected digest {}.., got {}..",
                        at.slot, at.queue, at.head, hex(&digest), hex(&own)
                    )));
                }
                Ok(())
            }
            Input::Checkpoint { hash } => {
                let own = self.trace.hash.0;
                if own != hash {
                    return Err(self.diverged(format!(
                        "landmark signatures differ (running hash expected {hash:#x}, got {own:#x})"
                    )));
                }
                Ok(())
            }
        };
        applied.map_err(|e| self.diverged(e.to_string()))
    }
}
