//! The VMM's Prometheus metrics (`--metrics-listen ADDR:PORT`, served by the shared
//! `metrics-http` endpoint). One process-wide set, as Firecracker keeps its `METRICS`: the
//! threads that see an event (the vCPU, the logging channel's writer and readers, the
//! watchdogs) count it where it happens, with one atomic operation; a scrape only reads.
//!
//! Names follow Prometheus's conventions (base units, `_total` for counters) and are listed
//! in docs/PROTOCOL.md, "Metrics". Histograms are in seconds.

use std::sync::LazyLock;

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use virtio_bindings::virtio_ids::{VIRTIO_ID_BLOCK, VIRTIO_ID_NET};
use vmm_api::Role;

use crate::ft::record::Kind;

/// Sets a gauge to a count (saturating: a gauge is an i64).
pub fn set_count(gauge: &IntGauge, value: u64) {
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
}

/// Every metric of the VMM, registered in `registry`.
pub struct VmmMetrics {
    pub registry: Registry,
    /// The current landmark (the determinism contract's clock; a backup's replay position).
    pub landmark: IntGauge,
    /// 1 for the role this VMM has now (`off`, `primary`, `backup`), 0 for the others.
    roles: [(Role, IntGauge); 3],
    pub ft_epoch: IntGauge,
    /// Primary: 1 while a backup has the state and acknowledges the log.
    pub ft_protected: IntGauge,
    /// Primary: 1 while a backup is joining (state transfer under way).
    pub ft_joining: IntGauge,
    /// Primary: the landmark the backup last reported.
    pub ft_backup_landmark: IntGauge,
    /// Primary: how far behind the backup was, in time, at each of its heartbeats.
    pub ft_lag: Histogram,
    /// Primary: how long each output was held for the backup's acknowledgement.
    pub ft_output_hold: Histogram,
    /// Log bytes by `direction` (`sent` by a primary, `received` by a backup).
    pub ft_log_bytes_sent: IntCounter,
    pub ft_log_bytes_received: IntCounter,
    sent: Vec<(Kind, IntCounter)>,
    received: Vec<(Kind, IntCounter)>,
    /// Watchdog periods in which a peer's heartbeat (or any record) was overdue.
    pub ft_heartbeats_missed: IntCounter,
    /// Peers declared lost by `peer` (`primary`, `backup`).
    pub ft_peers_lost: IntCounterVec,
    /// The arbiter's decisions for this VMM by `result` (`won`, `lost`).
    pub ft_arbiter_decisions: IntCounterVec,
    /// Times this VMM went live as a backup.
    pub ft_failovers: IntCounter,
    /// Backups that joined this primary, and the guest's pause for each.
    pub ft_joins: IntCounter,
    pub ft_join_pause: Histogram,
    /// FT: completions the VMM applied to a virtqueue, by `device` and `queue`, and those it
    /// could not apply.
    pub virtio_completions: IntCounterVec,
    pub virtio_errors: IntCounterVec,
    pub interrupts_injected: IntCounter,
}

/// The process's metrics, created on first use.
pub static METRICS: LazyLock<VmmMetrics> = LazyLock::new(|| {
    // The names and help texts are constants, checked by the unit test below: an error here
    // is a programming mistake, never a run-time condition.
    VmmMetrics::new().expect("the VMM's metric definitions are valid")
});

fn seconds(name: &str, help: &str, from: f64, buckets: usize) -> prometheus::Result<Histogram> {
    Histogram::with_opts(
        HistogramOpts::new(name, help).buckets(exponential_buckets(from, 2.0, buckets)?),
    )
}

impl VmmMetrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("vmm".into()), None)?;
        let reg = |c: Box<dyn Collector>| registry.register(c);
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            reg(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| metrics_http::counter(&registry, name, help);
        let counters = |name: &str, help: &str, labels: &[&str]| {
            metrics_http::counters(&registry, name, help, labels)
        };
        let histogram = |h: Histogram| -> prometheus::Result<Histogram> {
            reg(Box::new(h.clone()))?;
            Ok(h)
        };
        let ft_role = IntGaugeVec::new(
            Opts::new("ft_role", "1 for the FT role this VMM has now"),
            &["role"],
        )?;
        reg(Box::new(ft_role.clone()))?;
        let roles = [
            (Role::Off, "off"),
            (Role::Primary, "primary"),
            (Role::Backup, "backup"),
        ]
        .map(|(r, name)| (r, ft_role.with_label_values(&[name])));
        let log_bytes = counters(
            "ft_log_bytes_total",
            "Logging-channel bytes by direction",
            &["direction"],
        )?;
        let records = counters(
            "ft_log_records_total",
            "Logging-channel records by direction and kind",
            &["direction", "kind"],
        )?;
        let by_kind = |direction: &str| -> Vec<(Kind, IntCounter)> {
            let name = |k: &Kind| format!("{k:?}");
            Kind::ALL
                .iter()
                .map(|&k| (k, records.with_label_values(&[direction, &name(&k)])))
                .collect()
        };
        let m = VmmMetrics {
            landmark: gauge("landmark", "The current landmark")?,
            ft_epoch: gauge("ft_epoch", "The FT pairing's epoch (0: none)")?,
            ft_protected: gauge("ft_protected", "1 while a backup acknowledges the log")?,
            ft_joining: gauge("ft_joining", "1 while a backup is joining")?,
            ft_backup_landmark: gauge(
                "ft_backup_landmark",
                "The landmark the backup last reported",
            )?,
            ft_lag: histogram(seconds(
                "ft_lag_seconds",
                "How far behind the backup was at its heartbeats",
                1e-4,
                16,
            )?)?,
            ft_output_hold: histogram(seconds(
                "ft_output_hold_seconds",
                "How long an output was held for the backup's acknowledgement",
                1e-5,
                18,
            )?)?,
            ft_log_bytes_sent: log_bytes.with_label_values(&["sent"]),
            ft_log_bytes_received: log_bytes.with_label_values(&["received"]),
            sent: by_kind("sent"),
            received: by_kind("received"),
            ft_heartbeats_missed: counter(
                "ft_heartbeats_missed_total",
                "Watchdog periods in which the peer's heartbeat was overdue",
            )?,
            ft_peers_lost: counters(
                "ft_peers_lost_total",
                "Peers declared lost, by peer",
                &["peer"],
            )?,
            ft_arbiter_decisions: counters(
                "ft_arbiter_decisions_total",
                "The arbiter's decisions for this VMM, by result",
                &["result"],
            )?,
            ft_failovers: counter("ft_failovers_total", "Times this VMM went live as a backup")?,
            ft_joins: counter("ft_joins_total", "Backups that joined this primary")?,
            ft_join_pause: histogram(seconds(
                "ft_join_pause_seconds",
                "The guest's pause at each join",
                1e-3,
                14,
            )?)?,
            virtio_completions: counters(
                "virtio_completions_total",
                "Completions applied to a virtqueue (FT), by device and queue",
                &["device", "queue"],
            )?,
            virtio_errors: counters(
                "virtio_errors_total",
                "Completions that could not be applied, by device and queue",
                &["device", "queue"],
            )?,
            interrupts_injected: counter(
                "interrupts_injected_total",
                "Interrupts injected into the guest",
            )?,
            roles,
            registry,
        };
        m.set_role(Role::Off);
        Ok(m)
    }

    /// Publishes the role (one gauge per role: 1 for the current one).
    pub fn set_role(&self, role: Role) {
        for (r, gauge) in &self.roles {
            gauge.set(i64::from(*r == role));
        }
    }

    /// Counts one logging-channel record of `kind`, `sent` or received.
    pub fn record(&self, sent: bool, kind: Kind) {
        let table = if sent { &self.sent } else { &self.received };
        if let Some((_, c)) = table.iter().find(|(k, _)| *k == kind) {
            c.inc();
        }
    }

    /// Counts a completion applied (or refused) on `queue` of a device of virtio type `ty`.
    pub fn completion(&self, ty: u32, queue: u16, ok: bool) {
        let device = match ty {
            VIRTIO_ID_NET => "net",
            VIRTIO_ID_BLOCK => "block",
            _ => "other",
        };
        let family = if ok {
            &self.virtio_completions
        } else {
            &self.virtio_errors
        };
        family
            .with_label_values(&[device, &queue.to_string()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_defined_and_rendered() {
        let m = &*METRICS;
        m.record(true, Kind::Interrupt);
        m.ft_log_bytes_sent.inc_by(100);
        m.completion(VIRTIO_ID_NET, 1, true);
        m.set_role(Role::Primary);
        m.ft_lag.observe(0.002);
        let text = metrics_http::render(&m.registry);
        for line in [
            "vmm_ft_log_records_total{direction=\"sent\",kind=\"Interrupt\"} ",
            "vmm_ft_log_bytes_total{direction=\"sent\"} ",
            "vmm_virtio_completions_total{device=\"net\",queue=\"1\"} ",
            "vmm_ft_role{role=\"primary\"} 1",
            "vmm_ft_role{role=\"off\"} 0",
            "vmm_ft_lag_seconds_bucket{le=\"0.0032\"} ",
            "# TYPE vmm_ft_join_pause_seconds histogram",
            "# TYPE vmm_landmark gauge",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }
}
