//! Pausing the vCPU at a landmark and answering control-socket requests (crate::api).
//! A paused vCPU stays stopped at an exit; host events that arrive meanwhile are kept and
//! applied after `resume`, in order, so a pause changes nothing the guest can observe.

use std::sync::mpsc::Sender;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::vcpu::{State, Vcpu};
use crate::api::{error_reply, ok_reply, ApiCall, ApiRequest};
use crate::inbox::DeviceEvent;
use crate::persist::{hex, Persist};

/// A pause may be requested at most this many landmarks ahead (hours of guest time on these
/// machines): a request further out would only hold a client and its reply forever.
pub const MAX_PAUSE_AHEAD: u64 = 1_000_000_000;

#[derive(Default)]
pub struct Control {
    /// Pause once the landmark count reaches this.
    pause_at: Option<u64>,
    /// Clients waiting for the pause to happen.
    waiters: Vec<Sender<Value>>,
    paused: bool,
    /// Events that arrived while paused.
    deferred: Vec<DeviceEvent>,
}

impl Control {
    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn pause_due(&self, landmark: u64) -> bool {
        !self.paused && self.pause_at.is_some_and(|n| landmark >= n)
    }
}

impl Vcpu {
    fn status(&self) -> Value {
        let stats = &self.machine.stats;
        let pic = self.machine.devices.pic.save();
        ok_reply(&vmm_api::Status {
            state: match self.control.paused {
                true => vmm_api::RunState::Paused,
                false => vmm_api::RunState::Running,
            },
            landmark: self.engine.landmark(),
            pio_in: stats.pio_in,
            pio_out: stats.pio_out,
            mmio_read: stats.mmio_read,
            mmio_write: stats.mmio_write,
            hlt: stats.hlt,
            interrupts_injected: stats.interrupts_injected,
            // The 8259A pair (master, slave): requests, in service, masked.
            pic: vmm_api::Pic {
                irr: [pic.master.irr, pic.slave.irr],
                isr: [pic.master.isr, pic.slave.isr],
                imr: [pic.master.imr, pic.slave.imr],
            },
            ft: self.engine.ft_status(),
        })
    }

    /// SHA-256 of all guest RAM, and of the vCPU's registers and special registers.
    fn digest(&self) -> Value {
        let memory = match crate::memory::ram_digest(&self.machine.mem) {
            Ok(d) => d,
            Err(e) => return error_reply(e),
        };
        let (regs, sregs) = match (self.machine.fd.get_regs(), self.machine.fd.get_sregs()) {
            (Ok(r), Ok(s)) => (r, s),
            (Err(e), _) | (_, Err(e)) => {
                return error_reply(format!("cannot read vCPU state: {e}"))
            }
        };
        let mut vcpu = Sha256::new();
        vcpu.update(format!("{regs:?}{sregs:?}").as_bytes());
        ok_reply(&vmm_api::Digest {
            landmark: self.engine.landmark(),
            rip: regs.rip,
            memory: hex(&memory),
            vcpu: hex(&vcpu.finalize()),
        })
    }

    pub(super) fn handle_api(&mut self, call: ApiCall) {
        let now = self.engine.landmark();
        let reply = match call.request {
            ApiRequest::Status => self.status(),
            ApiRequest::Pause { landmark } => {
                let target = landmark.unwrap_or(now);
                if target < now {
                    error_reply(format!("landmark {target} has passed (now at {now})"))
                } else if target - now > MAX_PAUSE_AHEAD {
                    error_reply(format!(
                        "landmark {target} is more than {MAX_PAUSE_AHEAD} landmarks ahead (now at {now})"
                    ))
                } else if self.control.paused {
                    error_reply("already paused")
                } else {
                    self.control.pause_at = Some(target);
                    self.control.waiters.push(call.reply);
                    return; // answered when the pause happens
                }
            }
            ApiRequest::Resume => {
                if self.control.paused {
                    self.control.paused = false;
                    self.control.pause_at = None;
                    ok_reply(&vmm_api::Resumed { landmark: now })
                } else {
                    error_reply("not paused")
                }
            }
            ApiRequest::Protect { peer } => match self.engine.protect(peer) {
                Ok(()) => ok_reply(&vmm_api::Protecting { peer }),
                Err(e) => error_reply(e),
            },
            ApiRequest::Digest if self.control.paused => self.digest(),
            ApiRequest::Snapshot { path } if self.control.paused => {
                match self.machine.write_snapshot(&path, self.engine.trace()) {
                    Ok(bytes) => ok_reply(&vmm_api::SnapshotWritten {
                        landmark: now,
                        path,
                        bytes,
                    }),
                    Err(e) => error_reply(e),
                }
            }
            ApiRequest::Digest | ApiRequest::Snapshot { .. } => error_reply("pause the vCPU first"),
        };
        let _ = call.reply.send(reply);
    }

    /// Stops here (at a landmark) until a `resume` request.
    pub(super) fn enter_pause(&mut self, back: State) -> State {
        self.control.paused = true;
        // Let a backup run up to this landmark too, so that both can stop at the same place.
        self.engine.sync();
        let status = self.status();
        for waiter in self.control.waiters.drain(..) {
            let _ = waiter.send(status.clone());
        }
        State::Paused(Box::new(back))
    }

    /// `resume` arrived: the events that came meanwhile are applied now, in order.
    pub(super) fn leave_pause(&mut self) {
        for event in std::mem::take(&mut self.control.deferred) {
            self.apply_event(event);
        }
    }

    /// A host event that arrived while paused.
    pub(super) fn defer(&mut self, event: DeviceEvent) {
        self.control.deferred.push(event);
    }
}
