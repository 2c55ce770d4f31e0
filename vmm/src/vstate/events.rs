//! Host events at a landmark: the inbox's messages, each handed to the engine (inputs) or
//! handled here (control requests, backend connections).

use super::vcpu::Vcpu;
use crate::devices::virtio::ft_link::FtNotice;
use crate::ft::engine::OutputAt;
use crate::inbox::DeviceEvent;

impl Vcpu {
    /// Applies the host events queued since the last landmark.
    pub(super) fn apply_events(&mut self) {
        for event in self.inbox.drain() {
            self.apply_event(event);
        }
    }

    pub(super) fn apply_event(&mut self, event: DeviceEvent) {
        let m = &mut self.machine;
        match event {
            DeviceEvent::Api(call) => self.handle_api(call),
            DeviceEvent::BackendHangup(n) => {
                if let Some(dev) = m.vhost_user(n) {
                    dev.disconnected();
                }
            }
            DeviceEvent::BackendRetry(n) => {
                if let Some(dev) = m.vhost_user(n) {
                    dev.try_reconnect();
                }
            }
            DeviceEvent::FtWake => {}
            DeviceEvent::PitTick { at, .. } => self.engine.timer_tick(m, at),
            DeviceEvent::SerialInput(bytes) => self.engine.serial_input(m, &bytes),
            DeviceEvent::VirtioUsed(n) => self.engine.virtio_used(m, n),
            DeviceEvent::Ft(
                n,
                FtNotice::Completion {
                    queue,
                    head,
                    len,
                    writes,
                },
            ) => self.engine.completion(m, n, (queue, head, len), writes),
            DeviceEvent::Ft(
                slot,
                FtNotice::Output {
                    id,
                    queue,
                    head,
                    digest,
                },
            ) => self
                .engine
                .output(OutputAt { slot, queue, head }, id, digest),
            DeviceEvent::BackupConnected(stream) => {
                self.engine.join_backup(stream, &m.mem, &self.inbox)
            }
            DeviceEvent::FtJoinReady => self.engine.finish_join(m),
        }
    }
}
