//! The hooks the vCPU thread calls, and which engine answers each. This is the only place
//! that looks at the FT role.

use crate::ft::primary::ProtectError;
use std::net::SocketAddr;
use std::time::Instant;

use super::input::OutputAt;
use super::machine::{LogSink, LogSource, Machine, MachineError, Peek};
use super::recorder::{NoBackup, Recorder};
use super::replayer::Replayed;
use super::trace::Trace;
use super::EngineStop;
use crate::devices::virtio::ring::Written;
use crate::ft::backup::Backup;
use crate::ft::primary::Primary;
use crate::ft::record::ExitSignature;

/// What the vCPU does after the engine's turn at a landmark.
#[derive(Debug)]
pub enum Step {
    /// Enter the guest.
    Run,
    /// Replayer: the log does not tell yet; wait for the inbox and ask again.
    AwaitLog,
    /// Replayer: the log ended with everything applied; ask the arbiter (`arbitrate`).
    PrimaryLost,
    /// Stop the VM.
    Stop(EngineStop),
}

pub enum Engine {
    /// No FT: a recorder that logs nowhere.
    Plain(Recorder<NoBackup>),
    /// FT primary.
    Recorder(Box<Recorder<Primary>>),
    /// FT backup.
    Replayer(Box<Backup>),
}

impl Default for Engine {
    fn default() -> Self {
        Engine::Plain(Recorder::new(NoBackup, Trace::default()))
    }
}

impl Engine {
    pub fn trace(&self) -> &Trace {
        match self {
            Engine::Plain(r) => &r.trace,
            Engine::Recorder(r) => &r.trace,
            Engine::Replayer(b) => &b.replayer.trace,
        }
    }

    fn trace_mut(&mut self) -> &mut Trace {
        match self {
            Engine::Plain(r) => &mut r.trace,
            Engine::Recorder(r) => &mut r.trace,
            Engine::Replayer(b) => &mut b.replayer.trace,
        }
    }

    /// The current landmark's number.
    pub fn landmark(&self) -> u64 {
        self.trace().landmark
    }

    /// An exit was taken: the next landmark. Returns its number.
    pub fn exit(&mut self, sig: ExitSignature) -> u64 {
        self.trace_mut().exit(sig)
    }

    /// A PIT access reads the VM clock: the time it sees.
    pub fn clock_read(&mut self, now: impl FnOnce() -> u64) -> Result<u64, EngineStop> {
        match self {
            Engine::Plain(r) => Ok(r.clock_read(now())),
            Engine::Recorder(r) => Ok(r.clock_read(now())),
            Engine::Replayer(b) => b.replayer.clock_read(),
        }
    }

    /// PIT channel 0's host timer expired (a backup's guest sees only the primary's ticks).
    pub fn timer_tick(&mut self, m: &mut impl Machine, at: Instant) {
        match self {
            Engine::Plain(r) => r.timer_tick(m, at),
            Engine::Recorder(r) => r.timer_tick(m, at),
            Engine::Replayer(_) => {}
        }
    }

    pub fn serial_input(&mut self, m: &mut impl Machine, bytes: &[u8]) {
        match self {
            Engine::Plain(r) => r.serial_input(m, bytes),
            Engine::Recorder(r) => r.serial_input(m, bytes),
            Engine::Replayer(_) => {}
        }
    }

    /// Virtio device `slot` signalled used buffers (not in FT mode: there completions come
    /// through `completion`).
    pub fn virtio_used(&mut self, m: &mut impl Machine, slot: usize) {
        let result = match self {
            Engine::Plain(r) => r.virtio_used(m, slot),
            Engine::Recorder(r) => r.virtio_used(m, slot),
            Engine::Replayer(_) => Ok(()),
        };
        if let Err(e) = result {
            log::error!("virtio device {slot}: used-buffer signal not applied: {e}");
        }
    }

    /// FT: a backend's completion, applied by the VMM at this landmark.
    pub fn completion(
        &mut self,
        m: &mut impl Machine,
        slot: usize,
        chain: (u16, u16, u32),
        writes: Vec<Written>,
    ) {
        let result = match self {
            Engine::Plain(r) => r.completion(m, slot, chain, writes),
            Engine::Recorder(r) => r.completion(m, slot, chain, writes),
            Engine::Replayer(_) => Ok(()),
        };
        if let Err(e) = result {
            log::error!("virtio device {slot}: completion not applied: {e}");
        }
    }

    /// FT: a backend announced an output.
    pub fn output(&mut self, at: OutputAt, id: u64, digest: [u8; 32]) {
        if let Engine::Recorder(r) = self {
            r.output(at, id, digest);
        }
    }

    /// The engine's turn at a landmark, after the host events and before the guest runs.
    pub fn at_landmark(&mut self, m: &mut impl Machine) -> Result<Step, MachineError> {
        match self {
            Engine::Plain(r) => r.before_run(m),
            Engine::Recorder(r) => r.before_run(m),
            Engine::Replayer(b) => Ok(match b.replayer.replay(m) {
                Ok(Replayed::Done) => Step::Run,
                Ok(Replayed::NeedLog) => Step::AwaitLog,
                Err(EngineStop::PrimaryLost { .. }) => Step::PrimaryLost,
                Err(stop) => Step::Stop(stop),
            }),
        }
    }

    /// A backup that got `Step::AwaitLog`: whether its log still has nothing new, so that
    /// the vCPU may block until the channel's reader posts `FtWake`. Asked after the inbox
    /// was drained: a record queued since the replayer looked has had its `FtWake` taken by
    /// that drain, and the vCPU would otherwise sleep on a non-empty log.
    pub fn log_empty(&self) -> bool {
        match self {
            Engine::Replayer(b) => matches!(b.replayer.log.peek(), Peek::Empty),
            _ => false,
        }
    }

    /// After `hlt`: whether the vCPU waits for a host event (else the log decides).
    pub fn hlt_waits_for_host(&self) -> bool {
        !matches!(self, Engine::Replayer(_))
    }

    /// Before the vCPU blocks waiting for an interrupt.
    pub fn before_block(&mut self) -> Result<(), EngineStop> {
        if let Engine::Recorder(r) = self {
            r.sink.check()?;
            r.sync();
        }
        Ok(())
    }

    /// The vCPU pauses: a backup may run up to here, so that both can stop at one place.
    pub fn sync(&mut self) {
        if let Engine::Recorder(r) = self {
            r.sync();
        }
    }

    /// The control socket's `protect`.
    pub fn protect(&mut self, peer: SocketAddr) -> Result<(), ProtectError> {
        match self {
            Engine::Recorder(r) => r.sink.protect(peer),
            _ => Err(ProtectError::NotPrimary),
        }
    }

    /// The VM stops: the last entries go out; the replication summary.
    pub fn finish(&mut self) -> Option<String> {
        let Engine::Recorder(r) = self else {
            return None;
        };
        r.sink.flush();
        let mut summary = r.sink.summary();
        if let Some(pause) = r.sink.stats.join_pause {
            let s = summary.get_or_insert_with(String::new);
            s.push_str(&format!(" join_pause_ms={:.1}", pause.as_secs_f64() * 1e3));
        }
        summary
    }
}
