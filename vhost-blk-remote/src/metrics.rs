//! The backend's Prometheus metrics (`--metrics-listen`). One process-wide set, counted
//! where each event happens (names: docs/PROTOCOL.md, "Metrics"; durations in seconds).

use std::sync::LazyLock;
use std::time::Duration;

use metrics_http::counters;
use prometheus::{
    exponential_buckets, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Registry,
};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP};

use crate::blk::request::RequestKind;

pub struct BlkMetrics {
    pub registry: Registry,
    /// Requests taken off the queue, by `queue` and `type`.
    requests: IntCounterVec,
    /// Requests completed with an error status, or refused as malformed, by `reason`.
    errors: IntCounterVec,
    /// From an NBD command's submission to its reply, by `command`.
    nbd_latency: HistogramVec,
    nbd_errors: IntCounter,
    pub nbd_reconnects: IntCounter,
    /// FT: outputs held for the VMM's release, and those discarded unissued.
    pub ft_outputs_held: IntCounter,
    pub ft_outputs_discarded: IntCounter,
}

/// The process's metrics, created on first use.
pub static METRICS: LazyLock<BlkMetrics> = LazyLock::new(|| {
    // Constant names and help texts, checked by the unit test below: an error here is a
    // programming mistake, never a run-time condition.
    BlkMetrics::new().expect("the backend's metric definitions are valid")
});

impl BlkMetrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("vhost_blk".into()), None)?;
        let family =
            |name: &str, help: &str, labels: &[&str]| counters(&registry, name, help, labels);
        let requests = family(
            "requests_total",
            "Requests taken off the queue, by queue and type",
            &["queue", "type"],
        )?;
        let errors = family(
            "errors_total",
            "Requests completed with an error status or refused, by queue and reason",
            &["queue", "reason"],
        )?;
        let ft_outputs = family(
            "ft_outputs_total",
            "FT: writes, flushes and discards held for the VMM's release, and those discarded",
            &["fate"],
        )?;
        let nbd_commands = family(
            "nbd_events_total",
            "NBD client events: replies with an error, reconnections",
            &["event"],
        )?;
        let nbd_latency = HistogramVec::new(
            HistogramOpts::new(
                "nbd_request_seconds",
                "From an NBD command's submission to its reply, by command",
            )
            .buckets(exponential_buckets(2e-5, 2.0, 18)?),
            &["command"],
        )?;
        registry.register(Box::new(nbd_latency.clone()))?;
        Ok(BlkMetrics {
            nbd_errors: nbd_commands.with_label_values(&["error"]),
            nbd_reconnects: nbd_commands.with_label_values(&["reconnect"]),
            ft_outputs_held: ft_outputs.with_label_values(&["held"]),
            ft_outputs_discarded: ft_outputs.with_label_values(&["discarded"]),
            registry,
            requests,
            errors,
            nbd_latency,
        })
    }

    /// A request of `kind` taken off `queue`.
    pub fn request(&self, queue: u16, kind: &RequestKind) {
        let ty = match kind {
            RequestKind::In { .. } => "in",
            RequestKind::Out { .. } => "out",
            RequestKind::Flush => "flush",
            RequestKind::GetId { .. } => "get_id",
            RequestKind::Discard { .. } => "discard",
            RequestKind::Unsupported(_) => "unsupported",
        };
        self.requests
            .with_label_values(&[&queue.to_string(), ty])
            .inc();
    }

    /// A chain on `queue` completed with virtio-blk `status` (None: a refused chain whose
    /// status byte could not be located).
    pub fn completed(&self, queue: u16, status: Option<u8>) {
        let reason = match status.map(u32::from) {
            Some(VIRTIO_BLK_S_OK) => return,
            Some(VIRTIO_BLK_S_IOERR) => "ioerr",
            Some(VIRTIO_BLK_S_UNSUPP) => "unsupp",
            Some(_) => "other",
            None => "no_status",
        };
        self.errors
            .with_label_values(&[&queue.to_string(), reason])
            .inc();
    }

    /// A chain on `queue` refused as malformed (completed with `IOERR` where possible).
    pub fn refused(&self, queue: u16) {
        self.errors
            .with_label_values(&[&queue.to_string(), "invalid"])
            .inc();
    }

    /// An NBD `command` (`Command::name`) answered after `took` (`ok`: without an error).
    pub fn nbd_reply(&self, command: &str, took: Duration, ok: bool) {
        self.nbd_latency
            .with_label_values(&[command])
            .observe(took.as_secs_f64());
        if !ok {
            self.nbd_errors.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_defined_and_rendered() {
        let m = &*METRICS;
        m.request(0, &RequestKind::Flush);
        m.completed(0, Some(crate::blk::status::IOERR));
        m.completed(0, Some(crate::blk::status::OK));
        m.nbd_reply("flush", Duration::from_millis(3), true);
        m.ft_outputs_held.inc();
        let text = metrics_http::render(&m.registry);
        for line in [
            "vhost_blk_requests_total{queue=\"0\",type=\"flush\"} ",
            "vhost_blk_errors_total{queue=\"0\",reason=\"ioerr\"} ",
            "vhost_blk_nbd_request_seconds_bucket{command=\"flush\",le=\"0.00512\"} ",
            "vhost_blk_ft_outputs_total{fate=\"held\"} ",
            "vhost_blk_nbd_events_total{event=\"reconnect\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        assert!(!text.contains("reason=\"ok\""), "{text}");
    }
}
