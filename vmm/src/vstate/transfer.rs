//! State transfer (backup join): the primary stops at a landmark, sends memory, vCPU and
//! device state over the logging channel, and resumes with recording on; the backup loads it
//! and starts replaying from the same landmark. The same path re-protects a survivor.

use std::io::BufWriter;
use std::net::TcpStream;
use std::time::Instant;

use sha2::{Digest, Sha256};
use vm_memory::{Bytes, GuestAddress};

use super::vcpu::{FtRole, Vcpu};
use crate::devices::legacy::pic::Pic;
use crate::devices::legacy::pit::Pit;
use crate::devices::legacy::VmClock;
use crate::ft::backup::ReplayStop;
use crate::ft::record::{ExitKind, ExitSignature, Record, RecordWriter};
use crate::ft::signature::RunningHash;
use crate::ft::state::{from_blob, to_blob, MachineState, VcpuState};
use crate::memory::{for_each_chunk, ram_digest, ram_size, zero_ram};

/// Memory goes in chunks of this size (the record format's limit for data).
const CHUNK: usize = 1 << 20;

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

    fn send_state(&mut self, stream: &TcpStream, epoch: u64) -> Result<u64, String> {
        let FtRole::Primary(p) = &self.ft else {
            return Err("not a primary".into());
        };
        let (hash, last_sig) = (p.hash.0, p.last_sig);
        let vm_id = p.failover.vm_id.clone();
        let landmark = self.stats.landmarks;
        let clone = stream.try_clone().map_err(|e| e.to_string())?;
        let mut w = RecordWriter::new(BufWriter::with_capacity(4 << 20, clone));
        let err = |e: crate::ft::record::RecordError| e.to_string();
        let mem_size = ram_size(&self.mem);
        w.write(&Record::Hello {
            vm_id,
            epoch,
            mem_size,
        })
        .map_err(err)?;
        w.write(&Record::StateBegin { landmark }).map_err(err)?;
        let mut digest = Sha256::new();
        for_each_chunk(&self.mem, CHUNK, |gpa, data| {
            digest.update(data);
            // The backup zeroes its memory first: all-zero chunks need not travel.
            if data.iter().any(|&b| b != 0) {
                let data = data.to_vec();
                w.write(&Record::MemoryChunk { gpa, data }).map_err(err)?;
            }
            Ok(())
        })?;
        self.complete_pending_io()?;
        let vcpu = VcpuState::capture(&self.fd, &self.msr_index).map_err(|e| e.to_string())?;
        let blob = to_blob(&vcpu).map_err(|e| e.to_string())?;
        w.write(&Record::DeviceState {
            name: "vcpu".into(),
            blob,
        })
        .map_err(err)?;
        let blob = to_blob(&self.machine_state(hash, last_sig)).map_err(|e| e.to_string())?;
        w.write(&Record::DeviceState {
            name: "machine".into(),
            blob,
        })
        .map_err(err)?;
        w.write(&Record::StateEnd {
            landmark,
            digest: digest.finalize().into(),
        })
        .map_err(err)?;
        w.flush().map_err(err)?;
        Ok(w.last_seq())
    }

    /// Primary: a backup connected. Transfers the state at this landmark and starts logging.
    pub(super) fn join_backup(&mut self, stream: TcpStream) {
        let FtRole::Primary(p) = &self.ft else { return };
        if p.protected() {
            log::warn!("ft: a second backup tried to join; refused");
            return;
        }
        let start = Instant::now();
        let epoch = p.new_epoch();
        match self.send_state(&stream, epoch) {
            Ok(last_seq) => {
                let FtRole::Primary(p) = &mut self.ft else {
                    return;
                };
                match p.start_link(stream, last_seq) {
                    Ok(link) => {
                        p.attach(link, epoch);
                        let pause = start.elapsed();
                        p.stats.join_pause = Some(pause);
                        log::warn!(
                            "ft: backup joined at landmark {} (epoch {epoch}); the guest paused {:.1} ms for the state transfer",
                            self.stats.landmarks,
                            pause.as_secs_f64() * 1e3
                        );
                    }
                    Err(e) => {
                        log::error!("ft: cannot start the logging channel: {e}");
                        p.join_failed();
                    }
                }
            }
            Err(e) => {
                log::error!("ft: state transfer to the backup failed: {e}; still unprotected");
                if let FtRole::Primary(p) = &self.ft {
                    p.join_failed();
                }
            }
        }
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
                Record::StateEnd {
                    landmark,
                    digest: expected,
                } => {
                    let got = ram_digest(&self.mem)?;
                    if got != expected {
                        return Err("guest memory digest mismatch after the transfer".into());
                    }
                    break landmark;
                }
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
