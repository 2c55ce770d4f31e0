//! Event-loop side of the vhost-user devices: the backends' call eventfds, and a monitor per
//! backend that notices a hang-up and paces reconnection attempts.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use super::EventLoopError;
use crate::devices::virtio::vhost_user::BackendLink;
use crate::inbox::{DeviceEvent, Inbox};
use crate::sync::lock;

/// How often a disconnected device tries to reach its backend again.
const RETRY_PERIOD: Duration = Duration::from_millis(100);

/// Watches the call eventfds of virtio device `device`.
pub struct CallWatch {
    device: usize,
    calls: Vec<EventFd>,
    inbox: Arc<Inbox>,
}

impl CallWatch {
    pub fn new(device: usize, calls: Vec<EventFd>, inbox: Arc<Inbox>) -> Self {
        CallWatch {
            device,
            calls,
            inbox,
        }
    }
}

impl MutEventSubscriber for CallWatch {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if let Some(call) = self.calls.iter().find(|c| c.as_raw_fd() == events.fd()) {
            // Consume the count; several signals before we read coalesce into one interrupt.
            let _ = call.read();
            self.inbox.post(DeviceEvent::VirtioUsed(self.device));
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for call in &self.calls {
            if let Err(e) = ops.add(Events::new(call, EventSet::IN)) {
                log::error!("cannot watch a call eventfd of device {}: {e}", self.device);
            }
        }
    }
}

/// Watches one backend's socket for a hang-up, then asks for reconnection every
/// `RETRY_PERIOD` until the vCPU thread publishes a new socket in the `BackendLink`.
pub struct BackendMonitor {
    device: usize,
    link: Arc<BackendLink>,
    watched: Option<OwnedFd>,
    retry: TimerFd,
    inbox: Arc<Inbox>,
}

impl BackendMonitor {
    pub fn new(
        device: usize,
        link: Arc<BackendLink>,
        inbox: Arc<Inbox>,
    ) -> Result<Self, EventLoopError> {
        let retry = TimerFd::new().map_err(|e| EventLoopError::Timer(e.into()))?;
        Ok(BackendMonitor {
            device,
            link,
            watched: None,
            retry,
            inbox,
        })
    }

    fn hang_up_events(fd: &OwnedFd) -> Events {
        Events::new(fd, EventSet::READ_HANG_UP | EventSet::HANG_UP)
    }

    /// Starts watching the socket the vCPU thread last published.
    fn take_new_socket(&mut self, ops: &mut EventOps) {
        let _ = self.link.changed.read();
        let socket = lock(&self.link.socket).take();
        if let Some(fd) = socket {
            if let Some(old) = self.watched.take() {
                let _ = ops.remove(Self::hang_up_events(&old));
            }
            if let Err(e) = ops.add(Self::hang_up_events(&fd)) {
                log::error!(
                    "cannot watch the backend socket of device {}: {e}",
                    self.device
                );
            }
            self.watched = Some(fd);
            let _ = self.retry.clear();
        }
    }
}

impl MutEventSubscriber for BackendMonitor {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.link.changed.as_raw_fd() {
            self.take_new_socket(ops);
        } else if fd == self.retry.as_raw_fd() {
            let _ = self.retry.wait();
            self.inbox.post(DeviceEvent::BackendRetry(self.device));
        } else if self.watched.as_ref().is_some_and(|w| w.as_raw_fd() == fd) {
            if let Some(old) = self.watched.take() {
                let _ = ops.remove(Self::hang_up_events(&old));
            }
            self.inbox.post(DeviceEvent::BackendHangup(self.device));
            if let Err(e) = self.retry.reset(RETRY_PERIOD, Some(RETRY_PERIOD)) {
                log::error!(
                    "cannot arm the reconnect timer of device {}: {e}",
                    self.device
                );
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for events in [
            Events::new(&self.link.changed, EventSet::IN),
            Events::new(&self.retry, EventSet::IN),
        ] {
            if let Err(e) = ops.add(events) {
                log::error!(
                    "cannot set up the backend monitor of device {}: {e}",
                    self.device
                );
            }
        }
        // The socket of the initial connection was published before the loop started.
        self.take_new_socket(ops);
    }
}
