//! The vCPU while the arbiter is asked (a backup whose primary was lost): it stays at its
//! landmark and answers the control socket until the verdict comes (ft::takeover).

use super::vcpu::{Vcpu, VmExit};
use crate::inbox::DeviceEvent;

impl Vcpu {
    /// `Err`: the other side won (or going live failed); the VMM stops with it.
    pub(super) fn take_over(&mut self) -> Result<(), VmExit> {
        let Some(arbitration) = self.engine.arbitrate(&self.inbox) else {
            return Ok(());
        };
        let verdict = loop {
            if let Some(v) = arbitration.verdict() {
                break v;
            }
            self.inbox.wait();
            for event in self.inbox.drain() {
                // Only control requests matter now; a backup's host events carry nothing.
                if let DeviceEvent::Api(call) = event {
                    self.handle_api(call);
                }
            }
        };
        self.engine
            .go_live(&mut self.machine, verdict, arbitration.started, &self.inbox)
            .map_err(VmExit::from)
    }
}
