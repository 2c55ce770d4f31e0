//! The FT part of the control socket's `status` reply.

use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use super::engine::Engine;
use crate::sync::lock;

impl Engine {
    /// Adds the role, the epoch and, on a primary, the replication and join figures.
    pub fn status(&self, obj: &mut Map<String, Value>) {
        let (role, epoch, security) = match self {
            Engine::Plain(_) => ("off", None, None),
            Engine::Recorder(r) => (
                "primary",
                Some(r.sink.epoch),
                Some(&r.sink.failover.security),
            ),
            Engine::Replayer(b) => ("backup", Some(b.epoch), Some(&b.plan.failover.security)),
        };
        obj.insert("ft_role".into(), json!(role));
        obj.insert("ft_epoch".into(), json!(epoch));
        // "tls" (mutual TLS 1.3) or "insecure" (--ft-insecure: clear TCP).
        if let Some(s) = security {
            obj.insert(
                "ft_link".into(),
                json!(if s.is_tls() { "tls" } else { "insecure" }),
            );
        }
        if let Engine::Replayer(b) = self {
            // The backup's view of the log: how far the primary's entries go, how many
            // records arrived, and how many wait to be applied.
            let sh = b.shared();
            obj.insert(
                "ft_primary_landmark".into(),
                json!(sh.newest_landmark.load(Ordering::SeqCst)),
            );
            obj.insert(
                "ft_records".into(),
                json!(sh.received.load(Ordering::SeqCst)),
            );
            obj.insert("ft_queued".into(), json!(lock(&sh.queue).len()));
        }
        let Engine::Recorder(r) = self else { return };
        let p = &r.sink;
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
}
