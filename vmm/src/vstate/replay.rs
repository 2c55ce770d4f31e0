//! The backup's side of a landmark: apply every log entry the primary recorded at it, in the
//! primary's order, checking each against the backup's own execution.

use sha2::{Digest, Sha256};
use vm_memory::{Bytes, GuestAddress};

use super::events::unpack_output;
use super::vcpu::{FtRole, Vcpu};
use crate::devices::legacy::PIT_IRQ;
use crate::devices::virtio::ring::readable_bytes;
use crate::ft::backup::{Backup, ReplayStop};
use crate::ft::record::Record;
use crate::ft::signature::describe;
use crate::ft::{
    DEV_PIT, DEV_SERIAL, DEV_SIGNATURES, EV_PIT_TICK, EV_SERIAL_INPUT, EV_VIRTIO_USED,
};

fn hex(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

impl Vcpu {
    fn backup(&mut self) -> &mut Backup {
        match &mut self.ft {
            FtRole::Backup(b) => b,
            // replay_landmark is only called in the backup role.
            _ => unreachable!("replay outside the backup role"),
        }
    }

    /// The next entry for `landmark` (None once the landmark is complete). While the log is
    /// behind, host events are handled so that the control socket keeps answering, and a
    /// pause requested for this landmark takes effect: having applied everything the log
    /// holds, the backup is exactly where the primary was when it logged its last entry
    /// (for the primary paused at this landmark: where the primary is).
    fn backup_next(&mut self, landmark: u64) -> Result<Option<Record>, ReplayStop> {
        loop {
            if let Some(r) = self.backup().poll_at(landmark)? {
                return Ok(r);
            }
            if self.control.pause_due(landmark) {
                self.pause_loop();
                continue;
            }
            self.inbox.wait();
            self.apply_events();
        }
    }

    /// Applies the entries for the current landmark; returns once the log holds an entry for
    /// a later one.
    pub(super) fn replay_landmark(&mut self) -> Result<(), ReplayStop> {
        let landmark = self.stats.landmarks;
        self.backup()
            .shared
            .applied_landmark
            .store(landmark, std::sync::atomic::Ordering::Relaxed);
        while let Some(record) = self.backup_next(landmark)? {
            match record {
                Record::DeviceEvent {
                    sig,
                    device,
                    event,
                    arg,
                    ..
                } => {
                    self.backup().check_sig(landmark, &sig)?;
                    self.replay_event(landmark, device, event, arg)?;
                }
                Record::MemWrite { sig, gpa, data, .. } => {
                    self.backup().check_sig(landmark, &sig)?;
                    if let Err(e) = self.mem.write_slice(&data, GuestAddress(gpa)) {
                        return Err(self
                            .backup()
                            .diverged(landmark, format!("logged write at {gpa:#x} failed: {e}")));
                    }
                }
                Record::Interrupt { sig, vector, .. } => {
                    self.backup().check_sig(landmark, &sig)?;
                    // Right after the state transfer kvm_run's readiness flags are stale: the
                    // primary's decision stands (it checked them at this very landmark).
                    let ready =
                        self.devices.pic.has_pending() && (self.fresh_state || self.can_inject());
                    match self.devices.pic.acknowledge() {
                        Some(v) if ready && v == vector => {
                            if let Err(e) = self.inject(vector) {
                                return Err(self
                                    .backup()
                                    .diverged(landmark, format!("injection failed: {e}")));
                            }
                        }
                        got => {
                            let msg = format!("expected interrupt vector {vector:#x}, got {got:?} (ready: {ready})");
                            return Err(self.backup().diverged(landmark, msg));
                        }
                    }
                }
                Record::OutputDigest { device, digest, .. } => {
                    self.check_output(landmark, device, digest)?
                }
                other => {
                    let msg = format!("unexpected entry {:?}", other.kind());
                    return Err(self.backup().diverged(landmark, msg));
                }
            }
        }
        // The primary went past this landmark: stop here if asked to.
        if self.control.pause_due(landmark) {
            self.pause_loop();
        }
        if self.halted {
            let sig = describe(&self.backup().last_sig);
            return Err(self.backup().diverged(
                landmark,
                format!("{sig} but the primary injected no interrupt here"),
            ));
        }
        Ok(())
    }

    fn replay_event(
        &mut self,
        landmark: u64,
        device: u16,
        event: u16,
        arg: u64,
    ) -> Result<(), ReplayStop> {
        match (device, event) {
            (DEV_SIGNATURES, _) => {
                let own = self.backup().hash.0;
                if own != arg {
                    let msg = format!(
                        "landmark signatures differ (running hash expected {arg:#x}, got {own:#x})"
                    );
                    return Err(self.backup().diverged(landmark, msg));
                }
            }
            (DEV_PIT, EV_PIT_TICK) => self.devices.pic.pulse_irq(PIT_IRQ),
            (DEV_SERIAL, EV_SERIAL_INPUT) => {
                self.devices.serial.enqueue_input(&[arg as u8]);
                self.devices.forward_serial_irq();
            }
            (n, EV_VIRTIO_USED) if usize::from(n) < self.virtio.slots.len() => {
                self.virtio_used(usize::from(n))
            }
            _ => {
                let msg = format!("unexpected device event {device:#x}/{event} (a PIT access on the primary only?)");
                return Err(self.backup().diverged(landmark, msg));
            }
        }
        Ok(())
    }

    /// Compares the output the primary released with what this copy's guest asked to send.
    fn check_output(
        &mut self,
        landmark: u64,
        packed: u16,
        digest: [u8; 32],
    ) -> Result<(), ReplayStop> {
        let (slot, queue, head) = unpack_output(packed);
        let q = self
            .virtio
            .slots
            .get(slot)
            .and_then(|s| s.transport.state().queues.get(usize::from(queue)).copied());
        let bytes = match q.map(|q| readable_bytes(&self.mem, &q, head)) {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                return Err(self
                    .backup()
                    .diverged(landmark, format!("output chain {slot}/{queue}/{head}: {e}")))
            }
            None => {
                return Err(self
                    .backup()
                    .diverged(landmark, format!("output on unknown queue {slot}/{queue}")))
            }
        };
        let own: [u8; 32] = Sha256::digest(&bytes).into();
        if own != digest {
            let msg = format!(
                "output of device {slot} queue {queue} (chain {head}) differs: expected digest {}.., got {}..",
                hex(&digest),
                hex(&own)
            );
            return Err(self.backup().diverged(landmark, msg));
        }
        Ok(())
    }
}
