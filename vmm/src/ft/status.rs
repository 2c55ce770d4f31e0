//! The FT part of the control socket's `status` reply (`vmm_api::FtStatus`).

use std::sync::atomic::Ordering;

use vmm_api::{FtStatus, JoinProgress, Role};

use super::engine::Engine;
use crate::metrics::{set_count, METRICS};
use crate::sync::lock;

impl Engine {
    /// Publishes what the vCPU thread alone knows to the metrics: the landmark, the role,
    /// the epoch, protection. Called at every turn of the vCPU loop, so only atomic stores.
    pub fn publish_metrics(&self) {
        let m = &*METRICS;
        set_count(&m.landmark, self.landmark());
        let (role, epoch) = match self {
            Engine::Plain(_) => (Role::Off, 0),
            Engine::Recorder(r) => {
                m.ft_protected.set(i64::from(r.sink.protected()));
                m.ft_joining.set(i64::from(r.sink.join.is_some()));
                (Role::Primary, r.sink.epoch)
            }
            Engine::Replayer(b) => (Role::Backup, b.epoch),
        };
        m.set_role(role);
        set_count(&m.ft_epoch, epoch);
    }

    /// The role, the epoch and, on a backup, its view of the log; on a primary, the
    /// replication and join figures.
    pub fn ft_status(&self) -> FtStatus {
        let mut s = FtStatus::off();
        let security = match self {
            Engine::Plain(_) => return s,
            Engine::Recorder(r) => {
                s.ft_role = Role::Primary;
                s.ft_epoch = Some(r.sink.epoch);
                &r.sink.failover.security
            }
            Engine::Replayer(b) => {
                s.ft_role = Role::Backup;
                s.ft_epoch = Some(b.epoch);
                &b.plan.failover.security
            }
        };
        // "tls" (mutual TLS 1.3) or "insecure" (--ft-insecure: clear TCP).
        let link = if security.is_tls() { "tls" } else { "insecure" };
        s.ft_link = Some(link.into());
        if let Engine::Replayer(b) = self {
            // The backup's view of the log: how far the primary's entries go, how many
            // records arrived, and how many wait to be applied.
            let sh = b.shared();
            s.ft_primary_landmark = Some(sh.newest_landmark.load(Ordering::SeqCst));
            s.ft_records = Some(sh.received.load(Ordering::SeqCst));
            s.ft_queued = Some(lock(&sh.queue).len() as u64);
        }
        let Engine::Recorder(r) = self else { return s };
        let p = &r.sink;
        s.ft_protected = Some(p.protected());
        if let Some(pause) = p.stats.join_pause {
            s.ft_join_pause_ms = Some(pause.as_secs_f64() * 1e3);
            let total = p.stats.join_total.unwrap_or_default();
            s.ft_join_total_ms = Some(total.as_secs_f64() * 1e3);
            s.ft_join_rounds = Some(p.stats.join_rounds);
            s.ft_join_first_round_ms = Some(p.stats.join_first_round_ms);
            s.ft_join_bytes = Some(p.stats.join_bytes);
            s.ft_join_throttle_max_pct = Some(p.stats.join_throttle_max_pct);
        }
        if let Some(j) = &p.join {
            let g = &j.progress;
            s.ft_join = Some(JoinProgress {
                round: g.round.load(Ordering::Relaxed),
                throttle_pct: g.throttle_pct.load(Ordering::Relaxed),
                remaining_bytes: g.remaining.load(Ordering::Relaxed),
                elapsed_ms: u64::try_from(j.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        }
        if let Some(link) = p.link() {
            let sh = &link.shared;
            let pct = |m: &std::sync::Mutex<crate::stats::Samples>, q| lock(m).percentile(q);
            s.ft_records = Some(sh.sent.load(Ordering::SeqCst));
            s.ft_bytes = Some(sh.bytes_sent.load(Ordering::Relaxed));
            s.ft_backup_landmark = Some(sh.backup_landmark.load(Ordering::Relaxed));
            s.ft_lag_us_p50 = pct(&sh.lag, 50);
            s.ft_lag_us_p99 = pct(&sh.lag, 99);
            s.ft_hold_us_p50 = pct(&sh.hold, 50);
            s.ft_hold_us_p99 = pct(&sh.hold, 99);
        }
        s
    }
}
