//! State transfer (backup join): while the guest runs, the pre-copy (ft::precopy) sends its
//! memory and then the pages dirtied meanwhile; the primary then stops at a landmark for the
//! rest and the vCPU and device state, and resumes with recording on. The backup loads it all
//! and starts replaying from that landmark. The same path re-protects a survivor.

use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vm_memory::{Bytes, GuestAddress};

use super::vcpu::{FtRole, Vcpu};
use crate::devices::legacy::pic::Pic;
use crate::devices::legacy::pit::Pit;
use crate::devices::legacy::VmClock;
use crate::ft::backup::ReplayStop;
use crate::ft::precopy::{self, Handoff, JoinError, JoinProgress, JoinState, PrecopyJob};
use crate::ft::primary::Join;
use crate::ft::record::{ExitKind, ExitSignature, Record};
use crate::ft::signature::RunningHash;
use crate::ft::state::{from_blob, to_blob, MachineState, VcpuState};
use crate::memory::{ram_size, zero_ram, zero_range};
use crate::sync::lock;

fn sig_parts(s: &ExitSignature) -> (u8, u64, u8, u64) {
    (s.kind as u8, s.addr, s.size, s.data)
}

impl Vcpu {
    fn machine_state(&self, signature_hash: u64, last_sig: ExitSignature) -> MachineState {
        MachineState {
            landmark: self.stats.landmarks,
            clock_ns: self.devices.clock.now_ns(),
            signature_hash,
            last_sig: sig_parts(&last_sig),
            pic: self.devices.pic.state(),
            pit: self.devices.pit.state(),
            uart: self.devices.serial.state(),
            virtio: self
                .virtio
                .slots
                .iter()
                .map(|s| s.transport.state().clone())
                .collect(),
        }
    }

    /// An `in` or MMIO read is finished by KVM only on the next KVM_RUN (it copies the data
    /// userspace left in kvm_run into the register then). Until that happens the registers
    /// still point at the instruction, and a backup loading them would execute it again.
    /// KVM_RUN with `immediate_exit` set completes the pending operation and returns EINTR
    /// without running the guest (Linux Documentation/virt/kvm/api.rst, "immediate_exit").
    fn complete_pending_io(&mut self) -> Result<(), String> {
        self.fd.set_kvm_immediate_exit(1);
        let result = self.fd.run().map(|_| ());
        self.fd.set_kvm_immediate_exit(0);
        match result {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Ok(()) => Err("KVM_RUN with immediate_exit ran the guest".into()),
            Err(e) => Err(format!("cannot complete the pending I/O: {e}")),
        }
    }

    /// Primary: a backup connected. Starts the pre-copy (the guest keeps running); the
    /// stop-and-copy follows at the landmark where `FtJoinReady` arrives (`finish_join`).
    pub(super) fn join_backup(&mut self, stream: TcpStream) {
        let landmark = self.stats.landmarks;
        let mem = self.mem.clone();
        let FtRole::Primary(p) = &mut self.ft else {
            return;
        };
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
                mem_size: ram_size(&mem),
            },
            landmark,
            budget: p.failover.join_pause,
            inbox: self.inbox.clone(),
            state: state.clone(),
            progress: progress.clone(),
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

    /// Primary, at a landmark: the pre-copy is ready (or failed). Stops here for the rest of
    /// the memory and the vCPU and device state, then starts logging.
    pub(super) fn finish_join(&mut self) {
        let FtRole::Primary(p) = &mut self.ft else {
            return;
        };
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
        let last_seq = match self.stop_and_copy(*handoff) {
            Ok(seq) => seq,
            Err(e) => {
                log::error!("ft: state transfer to the backup failed: {e}; still unprotected");
                if let FtRole::Primary(p) = &mut self.ft {
                    p.join_failed();
                }
                return;
            }
        };
        let FtRole::Primary(p) = &mut self.ft else {
            return;
        };
        let Some(join) = p.join.take() else { return };
        if let Some(d) = &p.dirty {
            d.stop();
        }
        match join.link.start(last_seq) {
            Ok(link) => {
                p.attach(link, epoch);
                let pause = pause.elapsed();
                p.stats.join_pause = Some(pause);
                p.stats.join_total = Some(started.elapsed());
                p.stats.join_rounds = rounds;
                p.stats.join_throttle_max_pct = max_throttle;
                p.stats.join_first_round_ms = first_round_ms;
                log::warn!(
                    "ft: backup joined at landmark {} (epoch {epoch}); the guest paused {:.1} ms for the state transfer (pre-copy: {rounds} rounds, {:.1} MiB, {} ms in all, throttled at most {max_throttle}%)",
                    self.stats.landmarks,
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
    fn stop_and_copy(&mut self, handoff: Handoff) -> Result<u64, JoinError> {
        let Handoff {
            mut writer,
            mut pending,
            ..
        } = handoff;
        let FtRole::Primary(p) = &self.ft else {
            return Err(JoinError::Vanished);
        };
        let (hash, last_sig) = (p.hash.0, p.last_sig);
        let dirty = p.dirty.clone().ok_or(JoinError::Vanished)?;
        self.complete_pending_io().map_err(JoinError::Kvm)?;
        // Read the log only now: the vCPU is stopped and nothing else writes guest memory.
        pending.merge(&dirty.take()?);
        writer.send_dirty(&self.mem, &pending)?;
        let vcpu = VcpuState::capture(&self.fd, &self.msr_index)?;
        writer.write(&Record::DeviceState {
            name: "vcpu".into(),
            blob: to_blob(&vcpu)?,
        })?;
        writer.write(&Record::DeviceState {
            name: "machine".into(),
            blob: to_blob(&self.machine_state(hash, last_sig))?,
        })?;
        writer.write(&Record::StateEnd {
            landmark: self.stats.landmarks,
            digest: [0; 32],
        })?;
        if let FtRole::Primary(p) = &mut self.ft {
            p.stats.join_bytes = writer.bytes;
        }
        writer.finish()
    }

    /// Backup: receives the primary's state and becomes a copy of it.
    pub fn load_state(&mut self) -> Result<(), String> {
        let FtRole::Backup(b) = &mut self.ft else {
            return Err("not a backup".into());
        };
        let lost = |s: ReplayStop| format!("{s:?}");
        let mut vcpu: Option<VcpuState> = None;
        let mut machine: Option<MachineState> = None;
        let landmark = loop {
            match b.next_record().map_err(lost)? {
                Record::Hello {
                    vm_id,
                    mem_size,
                    epoch,
                } => {
                    if vm_id != b.plan.failover.vm_id {
                        return Err(format!(
                            "the primary runs VM {vm_id}, this backup is for {}",
                            b.plan.failover.vm_id
                        ));
                    }
                    b.epoch = epoch;
                    let ours = ram_size(&self.mem);
                    if mem_size != ours {
                        return Err(format!(
                            "primary {vm_id} has {mem_size} bytes of memory, this VM {ours}"
                        ));
                    }
                }
                Record::StateBegin { .. } => zero_ram(&self.mem)?,
                Record::MemoryZero { gpa, len } => zero_range(&self.mem, gpa, len)?,
                Record::MemoryChunk { gpa, data } => {
                    self.mem
                        .write_slice(&data, GuestAddress(gpa))
                        .map_err(|e| format!("memory chunk at {gpa:#x}: {e}"))?;
                }
                Record::DeviceState { name, blob } if name == "vcpu" => {
                    vcpu = Some(from_blob(&blob).map_err(|e| e.to_string())?)
                }
                Record::DeviceState { name, blob } if name == "machine" => {
                    machine = Some(from_blob(&blob).map_err(|e| e.to_string())?)
                }
                Record::DeviceState { name, .. } => {
                    return Err(format!("unknown device state {name}"))
                }
                // The digest is reserved (zeros): pre-copy has no moment at which the primary's
                // RAM could be hashed without pausing the guest for it.
                Record::StateEnd { landmark, .. } => break landmark,
                other => {
                    return Err(format!(
                        "unexpected record {:?} during the state transfer",
                        other.kind()
                    ))
                }
            }
        };
        let vcpu = vcpu.ok_or("no vCPU state in the transfer")?;
        let m = machine.ok_or("no machine state in the transfer")?;
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
        self.stats.landmarks = landmark;
        self.fresh_state = true;
        if let FtRole::Backup(b) = &mut self.ft {
            b.hash = RunningHash(m.signature_hash);
            b.last_clock_ns = m.clock_ns;
            let (kind, addr, size, data) = m.last_sig;
            let kind = ExitKind::from_u8(kind).ok_or("bad exit kind in the transfer")?;
            b.last_sig = ExitSignature {
                kind,
                addr,
                size,
                data,
            };
        }
        log::warn!("ft: backup loaded the primary's state at landmark {landmark}; replaying");
        Ok(())
    }
}
