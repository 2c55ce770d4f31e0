//! Pausing the vCPU at a landmark and answering control-socket requests (crate::api).
//! A paused vCPU stays stopped at an exit; host events that arrive meanwhile are kept and
//! applied after `resume`, in order, so a pause changes nothing the guest can observe.

use std::sync::mpsc::Sender;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::vcpu::Vcpu;
use crate::api::{error_reply, ApiCall, ApiRequest};
use crate::inbox::DeviceEvent;
use crate::sync::lock;

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
    pub fn pause_due(&self, landmark: u64) -> bool {
        !self.paused && self.pause_at.is_some_and(|n| landmark >= n)
    }
}

fn pic_summary(s: &crate::devices::legacy::pic::PicState) -> Value {
    json!({
        "irr": [s.master.irr, s.slave.irr],
        "isr": [s.master.isr, s.slave.isr],
        "imr": [s.master.imr, s.slave.imr],
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Vcpu {
    fn status(&self) -> Value {
        use super::vcpu::FtRole;
        let mut v = self.basic_status();
        let (role, epoch) = match &self.ft {
            FtRole::Off => ("off", None),
            FtRole::Primary(p) => ("primary", Some(p.epoch)),
            FtRole::Backup(b) => ("backup", Some(b.epoch)),
        };
        if let Some(obj) = v.as_object_mut() {
            obj.insert("ft_role".into(), json!(role));
            obj.insert("ft_epoch".into(), json!(epoch));
        }
        if let (FtRole::Primary(p), Some(obj)) = (&self.ft, v.as_object_mut()) {
            obj.insert("ft_protected".into(), json!(p.protected()));
            if let Some(ms) = p.stats.join_pause {
                obj.insert("ft_join_pause_ms".into(), json!(ms.as_secs_f64() * 1e3));
                let total = p.stats.join_total.unwrap_or_default();
                obj.insert("ft_join_total_ms".into(), json!(total.as_secs_f64() * 1e3));
                obj.insert("ft_join_rounds".into(), json!(p.stats.join_rounds));
                obj.insert(
                    "ft_join_first_round_ms".into(),
                    json!(p.stats.join_first_round_ms),
                );
                obj.insert("ft_join_bytes".into(), json!(p.stats.join_bytes));
                obj.insert(
                    "ft_join_throttle_max_pct".into(),
                    json!(p.stats.join_throttle_max_pct),
                );
            }
            if let Some(j) = &p.join {
                use std::sync::atomic::Ordering;
                let g = &j.progress;
                obj.insert(
                    "ft_join".into(),
                    json!({
                        "round": g.round.load(Ordering::Relaxed),
                        "throttle_pct": g.throttle_pct.load(Ordering::Relaxed),
                        "remaining_bytes": g.remaining.load(Ordering::Relaxed),
                        "elapsed_ms": j.started.elapsed().as_millis() as u64,
                    }),
                );
            }
            if let Some(link) = p.link() {
                use std::sync::atomic::Ordering;
                let sh = &link.shared;
                let pct = |m: &std::sync::Mutex<crate::stats::Samples>, q| lock(m).percentile(q);
                obj.insert("ft_records".into(), json!(sh.sent.load(Ordering::SeqCst)));
                obj.insert(
                    "ft_bytes".into(),
                    json!(sh.bytes_sent.load(Ordering::Relaxed)),
                );
                obj.insert(
                    "ft_backup_landmark".into(),
                    json!(sh.backup_landmark.load(Ordering::Relaxed)),
                );
                obj.insert("ft_lag_us_p50".into(), json!(pct(&sh.lag, 50)));
                obj.insert("ft_lag_us_p99".into(), json!(pct(&sh.lag, 99)));
                obj.insert("ft_hold_us_p50".into(), json!(pct(&sh.hold, 50)));
                obj.insert("ft_hold_us_p99".into(), json!(pct(&sh.hold, 99)));
            }
        }
        v
    }

    fn basic_status(&self) -> Value {
        json!({
            "ok": true,
            "state": if self.control.paused { "paused" } else { "running" },
            "landmark": self.stats.landmarks,
            "pio_in": self.stats.pio_in,
            "pio_out": self.stats.pio_out,
            "mmio_read": self.stats.mmio_read,
            "mmio_write": self.stats.mmio_write,
            "hlt": self.stats.hlt,
            "interrupts_injected": self.stats.interrupts_injected,
            // The 8259A pair (master, slave): requests, in service, masked.
            "pic": pic_summary(&self.devices.pic.state()),
        })
    }

    /// SHA-256 of all guest RAM, and of the vCPU's registers and special registers.
    fn digest(&self) -> Value {
        let memory = match crate::memory::ram_digest(&self.mem) {
            Ok(d) => d,
            Err(e) => return error_reply(e),
        };
        let (regs, sregs) = match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => (r, s),
            (Err(e), _) | (_, Err(e)) => {
                return error_reply(format!("cannot read vCPU state: {e}"))
            }
        };
        let mut vcpu = Sha256::new();
        vcpu.update(format!("{regs:?}{sregs:?}").as_bytes());
        json!({
            "ok": true,
            "landmark": self.stats.landmarks,
            "rip": regs.rip,
            "memory": hex(&memory),
            "vcpu": hex(&vcpu.finalize()),
        })
    }

    pub(super) fn handle_api(&mut self, call: ApiCall) {
        let now = self.stats.landmarks;
        let reply = match call.request {
            ApiRequest::Status => self.status(),
            ApiRequest::Pause { landmark } => {
                let target = landmark.unwrap_or(now);
                if target < now {
                    error_reply(format!("landmark {target} has passed (now at {now})"))
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
                    json!({"ok": true, "landmark": now})
                } else {
                    error_reply("not paused")
                }
            }
            ApiRequest::Protect { peer } => match &mut self.ft {
                super::vcpu::FtRole::Primary(p) => match p.protect(peer) {
                    Ok(()) => json!({"ok": true, "peer": peer.to_string()}),
                    Err(e) => error_reply(e),
                },
                _ => error_reply("not an FT primary"),
            },
            ApiRequest::Digest if self.control.paused => self.digest(),
            ApiRequest::Digest => error_reply("pause the vCPU first"),
        };
        let _ = call.reply.send(reply);
    }

    /// Stops here (at a landmark) until a `resume` request.
    pub(super) fn pause_loop(&mut self) {
        self.control.paused = true;
        // Let a backup run up to this landmark too, so that both can stop at the same place.
        if let super::vcpu::FtRole::Primary(p) = &mut self.ft {
            p.checkpoint(self.stats.landmarks, true);
            p.flush();
        }
        let status = self.status();
        for waiter in self.control.waiters.drain(..) {
            let _ = waiter.send(status.clone());
        }
        while self.control.paused {
            self.inbox.wait();
            for event in self.inbox.drain() {
                match event {
                    DeviceEvent::Api(call) => self.handle_api(call),
                    other => self.control.deferred.push(other),
                }
            }
        }
        for event in std::mem::take(&mut self.control.deferred) {
            self.apply_event(event);
        }
    }
}
