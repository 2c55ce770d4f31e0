//! Console input from the VMM's stdin.

use std::io::Read;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use crate::inbox::{DeviceEvent, Inbox};

/// Console input from the VMM's stdin, for `--serial stdout`.
pub struct StdinInput {
    inbox: Arc<Inbox>,
}

impl StdinInput {
    pub fn new(inbox: Arc<Inbox>) -> Self {
        StdinInput { inbox }
    }
}

impl MutEventSubscriber for StdinInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        match std::io::stdin().lock().read(&mut buf) {
            Ok(n) if n > 0 => self.inbox.post(DeviceEvent::SerialInput(buf[..n].to_vec())),
            // EOF or error: stop watching stdin (e.g. it is /dev/null under a test harness).
            _ => {
                let _ = ops.remove(events);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let stdin = std::io::stdin();
        if let Err(e) = ops.add(Events::new(&stdin, EventSet::IN)) {
            // Regular files and /dev/null cannot be polled; the console then has no input.
            log::debug!("console input disabled: {e}");
        }
    }
}
