//! Host events at a landmark: the inbox's messages, each handed to the engine (inputs) or
//! handled here (control requests, backend connections).

use super::vcpu::{State, Vcpu};
use crate::devices::virtio::ft_link::FtNotice;
use crate::ft::engine::OutputAt;
use crate::inbox::DeviceEvent;

impl Vcpu {
    /// The one dispatcher of inbox messages: control requests are answered in every state;
    /// while paused host events wait (a pause changes nothing the guest can observe);
    /// while the arbiter is asked they carry nothing (a backup's host events never reach its
    /// guest); otherwise they are applied, at this landmark.
    pub(super) fn dispatch(&mut self, state: &State) {
        for event in self.inbox.drain() {
            match (state, event) {
                (_, DeviceEvent::Api(call)) => self.handle_api(call),
                (State::Paused(_), event) => self.defer(event),
                (State::Arbitrating(_), _) => {}
                (_, event) => self.apply_event(event),
            }
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
