//! The hand-off point between the event-loop thread and the vCPU thread.
//!
//! Host events (a PIT timer expiry, bytes typed on the console, later virtio completions) are
//! non-deterministic inputs. The event loop never touches device state: it posts a
//! `DeviceEvent` here, and the vCPU thread applies the queued events only while the vCPU is
//! stopped at a landmark (an exit). That is the single place where non-determinism enters the
//! guest, which is where record/replay hooks in.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::sync::lock;

#[derive(Debug)]
pub enum DeviceEvent {
    /// The host timer standing in for PIT channel 0 expired `expirations` times (>= 1).
    PitTick { expirations: u64, at: Instant },
    /// Bytes read from the console input.
    SerialInput(Vec<u8>),
    /// Virtio device `n` (its slot) signalled a used buffer on one of its call eventfds.
    VirtioUsed(usize),
    /// The vhost-user backend of virtio device `n` hung up.
    BackendHangup(usize),
    /// Time to try reconnecting virtio device `n` to its backend.
    BackendRetry(usize),
    /// A request from the control socket.
    Api(crate::api::ApiCall),
    /// FT mode: a completion or output announcement from virtio device `n`'s backend.
    Ft(usize, crate::devices::virtio::ft_link::FtNotice),
    /// FT: something changed that the vCPU thread must look at (log records arrived, the
    /// logging channel died, the arbiter answered). Carries nothing; it only wakes the vCPU.
    FtWake,
    /// FT primary: a backup connected; transfer the state to it.
    BackupConnected(crate::ft::link::LinkStream),
    /// FT primary: the pre-copy of a join is ready for its stop-and-copy (or failed).
    FtJoinReady,
}

#[derive(Debug, Default)]
pub struct Inbox {
    queue: Mutex<VecDeque<DeviceEvent>>,
    posted: Condvar,
}

impl Inbox {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<DeviceEvent>> {
        lock(&self.queue)
    }

    pub fn post(&self, event: DeviceEvent) {
        self.lock().push_back(event);
        self.posted.notify_all();
    }

    /// Posts several events at once (one wake-up).
    pub fn post_all(&self, events: impl IntoIterator<Item = DeviceEvent>) {
        self.lock().extend(events);
        self.posted.notify_all();
    }

    /// Takes every queued event, oldest first, without blocking.
    pub fn drain(&self) -> Vec<DeviceEvent> {
        self.lock().drain(..).collect()
    }

    /// Blocks until at least one event is queued.
    pub fn wait(&self) {
        let mut queue = self.lock();
        while queue.is_empty() {
            queue = self.posted.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn events_come_out_in_order() {
        let inbox = Inbox::new();
        inbox.post(DeviceEvent::SerialInput(b"a".to_vec()));
        inbox.post(DeviceEvent::SerialInput(b"b".to_vec()));
        let events = inbox.drain();
        assert!(
            matches!(&events[..], [DeviceEvent::SerialInput(a), DeviceEvent::SerialInput(b)] if a == b"a" && b == b"b")
        );
        assert!(inbox.drain().is_empty());
    }

    #[test]
    fn wait_wakes_up_on_post_from_another_thread() {
        let inbox = Arc::new(Inbox::new());
        let poster = inbox.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            poster.post(DeviceEvent::SerialInput(vec![1]));
        });
        inbox.wait();
        assert_eq!(inbox.drain().len(), 1);
        t.join().expect("poster thread");
    }
}
