//! State transfer (backup join): while the guest runs, the pre-copy (ft::precopy) sends its
//! memory and then the pages dirtied meanwhile; the primary then stops at a landmark for the
//! rest and the vCPU and device state, and resumes with recording on. The backup loads it all
//! and starts replaying from that landmark. The same path re-protects a survivor.

use super::link::LinkStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::backup::Backup;
use super::engine::{Engine, Recorder, Trace};
use super::precopy::{self, Handoff, JoinError, JoinProgress, JoinState, PrecopyJob};
use super::primary::{Join, Primary};
use super::record::{ExitKind, ExitSignature, Kind, Record};
use super::signature::RunningHash;
use super::state::{from_blob, to_blob, MachineState, StateError, VcpuState};
use crate::devices::legacy::serial::SerialError;
use crate::devices::virtio::slots::VirtioStateError;
use crate::inbox::Inbox;
use crate::memory::{ram_size, zero_ram, zero_range, RamError};
use crate::metrics::METRICS;
use crate::persist::envelope::{MAGIC_MACHINE, MAGIC_VCPU};
use crate::sync::lock;

/// The machine's side of a state transfer: what is captured at the stop-and-copy and what a
/// backup restores (vstate::snapshot).
pub trait Snapshot {
    fn memory(&self) -> &GuestMemoryMmap;
    /// The vCPU is stopped at the landmark `trace` describes: its state and the devices'.
    fn capture(&mut self, trace: &Trace) -> Result<(VcpuState, MachineState), JoinError>;
    fn restore(&mut self, vcpu: &VcpuState, machine: &MachineState) -> Result<(), RestoreError>;
}

/// A state the machine refused (`Snapshot::restore`).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Vcpu(#[from] StateError),
    #[error(transparent)]
    Legacy(#[from] SerialError),
    #[error(transparent)]
    Virtio(#[from] VirtioStateError),
}

/// Why a backup discarded a state transfer (`Backup::load_state`).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the primary went away during the state transfer")]
    PrimaryGone,
    #[error("the primary runs VM {theirs}, this backup is for {ours}")]
    OtherVm { theirs: String, ours: String },
    #[error("primary {vm_id} has {theirs} bytes of memory, this VM {ours}")]
    MemorySize {
        vm_id: String,
        theirs: u64,
        ours: u64,
    },
    #[error("memory record at {gpa:#x}: {source}")]
    Memory { gpa: u64, source: RamError },
    #[error("unknown device state {0}")]
    UnknownDevice(String),
    #[error("{name} state: {source}")]
    Blob {
        name: &'static str,
        source: StateError,
    },
    #[error("unexpected record {0:?} during the state transfer")]
    Unexpected(Kind),
    #[error("no {0} state in the transfer")]
    Missing(&'static str),
    #[error("bad exit kind {0} in the transfer")]
    ExitKind(u8),
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// (kind, addr, size, data): how `MachineState` carries a signature.
pub fn sig_parts(s: &ExitSignature) -> (u8, u64, u8, u64) {
    (s.kind as u8, s.addr, s.size, s.data)
}

impl Engine {
    /// Primary: a backup connected. Starts the pre-copy (the guest keeps running); the
    /// stop-and-copy follows at the landmark where `FtJoinReady` arrives (`finish_join`).
    pub fn join_backup(&mut self, stream: LinkStream, mem: &GuestMemoryMmap, inbox: &Arc<Inbox>) {
        if let Engine::Recorder(r) = self {
            r.join_backup(stream, mem, inbox);
        }
    }

    /// Primary, at a landmark: the pre-copy is ready (or failed).
    pub fn finish_join(&mut self, m: &mut impl Snapshot) {
        if let Engine::Recorder(r) = self {
            r.finish_join(m);
        }
    }
}

impl Recorder<Primary> {
    fn join_backup(&mut self, stream: LinkStream, mem: &GuestMemoryMmap, inbox: &Arc<Inbox>) {
        let landmark = self.trace.landmark;
        let p = &mut self.sink;
        if p.protected() || p.join.is_some() {
            log::warn!("ft: a second backup tried to join; refused");
            return;
        }
        let Some(dirty) = p.dirty.clone() else {
            log::error!("ft: no dirty log: cannot transfer the state; still unprotected");
            return p.join_failed();
        };
        let epoch = p.new_epoch();
        let link = match p.open_link(stream) {
            Ok(l) => l,
            Err(e) => {
                log::error!("ft: cannot start the logging channel: {e}; still unprotected");
                return p.join_failed();
            }
        };
        let state = Arc::new(Mutex::new(JoinState::Copying));
        let progress = Arc::new(JoinProgress::default());
        let job = link.transfer_stream().map(|stream| PrecopyJob {
            mem: mem.clone(),
            link: link.shared(),
            dirty,
            stream,
            hello: Record::Hello {
                vm_id: p.failover.vm_id.clone(),
                epoch,
                mem_size: ram_size(mem),
            },
            landmark,
            budget: p.failover.join_pause,
            inbox: inbox.clone(),
            state: state.clone(),
            progress: progress.clone(),
            events: p.events.clone(),
        });
        p.join = Some(Join {
            link,
            epoch,
            state,
            progress,
            started: Instant::now(),
        });
        if let Err(e) = job.and_then(precopy::spawn) {
            log::error!("ft: cannot start the pre-copy: {e}; still unprotected");
            p.join_failed();
        }
    }

    /// Stops here for the rest of the memory and the vCPU and device state, then starts
    /// logging.
    fn finish_join(&mut self, m: &mut impl Snapshot) {
        let p = &mut self.sink;
        let Some(join) = &p.join else { return };
        let taken = std::mem::replace(&mut *lock(&join.state), JoinState::Taken);
        let handoff = match taken {
            JoinState::Ready(h) => h,
            JoinState::Failed(e) => {
                log::error!("ft: state transfer to the backup failed: {e}; still unprotected");
                return p.join_failed();
            }
            other => {
                // Not ready yet (a stale wake-up): put it back.
                *lock(&join.state) = other;
                return;
            }
        };
        let pause = Instant::now();
        let (epoch, started) = (join.epoch, join.started);
        let max_throttle = join.progress.max_throttle_pct.load(Ordering::Relaxed);
        let first_round_ms = join.progress.first_round_ms.load(Ordering::Relaxed);
        join.progress.throttle_pct.store(0, Ordering::Relaxed);
        let rounds = handoff.rounds;
        let last_seq = match self.stop_and_copy(m, *handoff) {
            Ok(seq) => seq,
            Err(e) => {
                log::error!("ft: state transfer to the backup failed: {e}; still unprotected");
                return self.sink.join_failed();
            }
        };
        let landmark = self.trace.landmark;
        let p = &mut self.sink;
        let Some(join) = p.join.take() else { return };
        if let Some(d) = &p.dirty {
            d.stop();
        }
        match join.link.start(last_seq) {
            Ok(link) => {
                p.attach(link, epoch);
                let pause = pause.elapsed();
                p.stats.join_pause = Some(pause);
                METRICS.ft_joins.inc();
                METRICS.ft_join_pause.observe(pause.as_secs_f64());
                p.stats.join_total = Some(started.elapsed());
                p.stats.join_rounds = rounds;
                p.stats.join_throttle_max_pct = max_throttle;
                p.stats.join_first_round_ms = first_round_ms;
                log::warn!(
                    "ft: backup joined at landmark {landmark} (epoch {epoch}); the guest paused {:.1} ms for the state transfer (pre-copy: {rounds} rounds, {:.1} MiB, {} ms in all, throttled at most {max_throttle}%)",
                    pause.as_secs_f64() * 1e3,
                    p.stats.join_bytes as f64 / f64::from(1u32 << 20),
                    started.elapsed().as_millis(),
                );
            }
            Err(e) => {
                log::error!("ft: cannot start the logging channel: {e}");
                p.join_failed();
            }
        }
    }

    /// The stop-and-copy at the end of a pre-copy: the pages dirtied since its last round,
    /// then the vCPU and device state. Returns the last sequence number of the transfer.
    fn stop_and_copy(&mut self, m: &mut impl Snapshot, handoff: Handoff) -> Result<u64, JoinError> {
        let Handoff {
            mut writer,
            mut pending,
            ..
        } = handoff;
        let dirty = self.sink.dirty.clone().ok_or(JoinError::Vanished)?;
        let (vcpu, machine) = m.capture(&self.trace)?;
        // Read the log only now: the vCPU is stopped and nothing else writes guest memory.
        pending.merge(&dirty.take()?);
        writer.send_dirty(m.memory(), &pending)?;
        writer.write(&Record::DeviceState {
            name: "vcpu".into(),
            blob: to_blob(&MAGIC_VCPU, &vcpu)?,
        })?;
        writer.write(&Record::DeviceState {
            name: "machine".into(),
            blob: to_blob(&MAGIC_MACHINE, &machine)?,
        })?;
        writer.write(&Record::StateEnd {
            landmark: self.trace.landmark,
            digest: [0; 32],
        })?;
        self.sink.stats.join_bytes = writer.bytes;
        writer.finish()
    }
}

impl Backup {
    /// Receives the primary's state and makes `m` a copy of it.
    pub fn load_state(&mut self, m: &mut impl Snapshot) -> Result<(), LoadError> {
        let mut vcpu: Option<VcpuState> = None;
        let mut machine: Option<MachineState> = None;
        let mem = m.memory().clone();
        let at = |gpa| move |source| LoadError::Memory { gpa, source };
        let blob = |name| move |source| LoadError::Blob { name, source };
        let landmark = loop {
            let Some(record) = self.next_record() else {
                return Err(LoadError::PrimaryGone);
            };
            match record {
                Record::Hello {
                    vm_id,
                    mem_size,
                    epoch,
                } => {
                    if vm_id != self.plan.failover.vm_id {
                        return Err(LoadError::OtherVm {
                            theirs: vm_id,
                            ours: self.plan.failover.vm_id.clone(),
                        });
                    }
                    self.epoch = epoch;
                    let ours = ram_size(&mem);
                    if mem_size != ours {
                        return Err(LoadError::MemorySize {
                            vm_id,
                            theirs: mem_size,
                            ours,
                        });
                    }
                }
                Record::StateBegin { .. } => zero_ram(&mem).map_err(at(0))?,
                Record::MemoryZero { gpa, len } => zero_range(&mem, gpa, len).map_err(at(gpa))?,
                Record::MemoryChunk { gpa, data } => {
                    mem.write_slice(&data, GuestAddress(gpa))
                        .map_err(|e| at(gpa)(RamError::from(e)))?;
                }
                Record::DeviceState { name, blob: b } if name == "vcpu" => {
                    vcpu = Some(from_blob(&MAGIC_VCPU, &b).map_err(blob("vCPU"))?)
                }
                Record::DeviceState { name, blob: b } if name == "machine" => {
                    machine = Some(from_blob(&MAGIC_MACHINE, &b).map_err(blob("machine"))?)
                }
                Record::DeviceState { name, .. } => return Err(LoadError::UnknownDevice(name)),
                // The digest is reserved (zeros): pre-copy has no moment at which the primary's
                // RAM could be hashed without pausing the guest for it.
                Record::StateEnd { landmark, .. } => break landmark,
                other => return Err(LoadError::Unexpected(other.kind())),
            }
        };
        let vcpu = vcpu.ok_or(LoadError::Missing("vCPU"))?;
        let state = machine.ok_or(LoadError::Missing("machine"))?;
        let (kind, addr, size, data) = state.last_sig;
        let kind = ExitKind::from_u8(kind).ok_or(LoadError::ExitKind(kind))?;
        m.restore(&vcpu, &state)?;
        self.replayer.trace = Trace {
            landmark,
            hash: RunningHash(state.signature_hash),
            last_sig: ExitSignature {
                kind,
                addr,
                size,
                data,
            },
        };
        self.replayer.last_clock_ns = state.legacy.clock_ns;
        log::warn!("ft: backup loaded the primary's state at landmark {landmark}; replaying");
        Ok(())
    }
}
