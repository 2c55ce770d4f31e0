//! Host events applied at a landmark (primary and plain VMs), and what the primary logs for
//! each. A backup ignores its own host events: its inputs come from the log (vstate::replay).

use std::time::Instant;

use vm_memory::{Bytes, GuestAddress};

use super::vcpu::{FtRole, Vcpu};
use crate::devices::legacy::PIT_IRQ;
use crate::devices::virtio::ft_link::FtNotice;
use crate::devices::virtio::ring::{push_used, Written};
use crate::ft::record::Record;
use crate::ft::{DEV_PIT, DEV_SERIAL, EV_PIT_TICK, EV_SERIAL_INPUT, EV_VIRTIO_USED};
use crate::inbox::DeviceEvent;

/// Packs (virtio slot, queue, chain head) into the 16-bit device field of an OutputDigest
/// record: slot < 16, queue < 16, head < 256 (queues have at most 256 entries).
pub fn pack_output(slot: usize, queue: u16, head: u16) -> u16 {
    ((slot as u16 & 0xf) << 12) | ((queue & 0xf) << 8) | (head & 0xff)
}

pub fn unpack_output(packed: u16) -> (usize, u16, u16) {
    (
        usize::from(packed >> 12),
        (packed >> 8) & 0xf,
        packed & 0xff,
    )
}

impl Vcpu {
    /// Applies the host events queued since the last landmark.
    pub(super) fn apply_events(&mut self) {
        for event in self.inbox.drain() {
            self.apply_event(event);
        }
    }

    fn record_event(&mut self, device: u16, event: u16, arg: u64) {
        if let FtRole::Primary(p) = &mut self.ft {
            let landmark = self.stats.landmarks;
            let sig = p.last_sig;
            p.record(
                landmark,
                Record::DeviceEvent {
                    landmark,
                    sig,
                    device,
                    event,
                    arg,
                },
            );
        }
    }

    fn record_writes(&mut self, writes: Vec<Written>) {
        if let FtRole::Primary(p) = &mut self.ft {
            let landmark = self.stats.landmarks;
            let sig = p.last_sig;
            for w in writes {
                p.record(
                    landmark,
                    Record::MemWrite {
                        landmark,
                        sig,
                        gpa: w.gpa,
                        data: w.data,
                    },
                );
            }
        }
    }

    /// A write of the VMM into guest memory, which KVM's dirty log does not see.
    fn mark_dirty(&self, w: &Written) {
        if let FtRole::Primary(p) = &self.ft {
            p.mark_dirty(w.gpa, w.data.len());
        }
    }

    /// Raises virtio device `n`'s interrupt (used buffer) and logs it.
    pub(super) fn virtio_used(&mut self, n: usize) {
        if let Some(slot) = self.virtio.slots.get_mut(n) {
            if slot.transport.signal_used() {
                self.devices.pic.pulse_irq(slot.irq);
                self.irq_raised_at.get_or_insert_with(Instant::now);
            }
        }
    }

    pub(super) fn apply_event(&mut self, event: DeviceEvent) {
        let backup = matches!(self.ft, FtRole::Backup(_));
        match event {
            DeviceEvent::Api(call) => self.handle_api(call),
            DeviceEvent::BackendHangup(n) => {
                if let Some(dev) = self.vhost_user(n) {
                    dev.disconnected();
                }
            }
            DeviceEvent::BackendRetry(n) => {
                if let Some(dev) = self.vhost_user(n) {
                    dev.try_reconnect();
                }
            }
            DeviceEvent::FtWake => {}
            // A backup's guest sees only what the primary's guest saw.
            _ if backup => {}
            DeviceEvent::PitTick { at, .. } => {
                // Several expirations while the vCPU was busy coalesce into one edge, as a
                // real 8259A latches only one request per line.
                self.devices.pic.pulse_irq(PIT_IRQ);
                self.irq_raised_at.get_or_insert(at);
                self.record_event(DEV_PIT, EV_PIT_TICK, 0);
            }
            DeviceEvent::SerialInput(bytes) => {
                for b in &bytes {
                    self.record_event(DEV_SERIAL, EV_SERIAL_INPUT, u64::from(*b));
                }
                self.devices.serial.enqueue_input(&bytes);
                self.devices.forward_serial_irq();
                self.irq_raised_at.get_or_insert_with(Instant::now);
            }
            DeviceEvent::VirtioUsed(n) => {
                self.record_event(n as u16, EV_VIRTIO_USED, 0);
                self.virtio_used(n);
            }
            DeviceEvent::Ft(
                n,
                FtNotice::Completion {
                    queue,
                    head,
                    len,
                    writes,
                },
            ) => self.complete(n, queue, head, len, writes),
            DeviceEvent::Ft(
                n,
                FtNotice::Output {
                    id,
                    queue,
                    head,
                    digest,
                },
            ) => {
                if let FtRole::Primary(p) = &mut self.ft {
                    p.output(
                        self.stats.landmarks,
                        n,
                        super::events::pack_output(n, queue, head),
                        id,
                        digest,
                    );
                }
            }
            DeviceEvent::BackupConnected(stream) => self.join_backup(stream),
            DeviceEvent::FtJoinReady => self.finish_join(),
        }
    }

    /// A completion handed over by backend `n` (FT mode): its memory writes, the used element
    /// and the interrupt, all at this landmark and all logged.
    fn complete(&mut self, n: usize, queue: u16, head: u16, len: u32, writes: Vec<Written>) {
        for w in &writes {
            if let Err(e) = self.mem.write_slice(&w.data, GuestAddress(w.gpa)) {
                log::error!(
                    "virtio device {n}: completion writes outside guest memory at {:#x}: {e}",
                    w.gpa
                );
                return;
            }
            self.mark_dirty(w);
        }
        // Logged as applied: the backend's writes, then the used element and index.
        let mut done = writes;
        let Some(q) = self
            .virtio
            .slots
            .get(n)
            .and_then(|s| s.transport.state().queues.get(usize::from(queue)).copied())
        else {
            log::error!("virtio device {n}: completion for unknown queue {queue}");
            return;
        };
        let result = push_used(&self.mem, &q, head, len, &mut done);
        for w in &done {
            self.mark_dirty(w);
        }
        if let Err(e) = result {
            log::error!("virtio device {n} queue {queue}: cannot write the used ring: {e}");
            return;
        }
        self.record_writes(done);
        self.record_event(n as u16, EV_VIRTIO_USED, 0);
        self.virtio_used(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_locations_pack_and_unpack() {
        assert_eq!(unpack_output(pack_output(1, 1, 255)), (1, 1, 255));
        assert_eq!(unpack_output(pack_output(0, 0, 0)), (0, 0, 0));
        assert_eq!(unpack_output(pack_output(15, 2, 17)), (15, 2, 17));
    }
}
