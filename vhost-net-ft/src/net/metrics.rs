//! The backend's Prometheus metrics (`--metrics-listen`): the process-wide [`NetStats`]
//! counters, copied into a registry before each scrape (the data path keeps counting with
//! one relaxed atomic add, as before). Names: docs/PROTOCOL.md, "Metrics".

use metrics_http::{counter, counters};
use prometheus::{IntCounter, IntCounterVec, Registry};

use super::stats::{NetStats, NetStatsSnapshot};

/// The registry and, for every counter of [`NetStats`], the series it is shown as.
pub struct NetMetrics {
    pub registry: Registry,
    series: Vec<(Field, IntCounter)>,
}

/// Reads one counter out of a snapshot.
type Field = fn(&NetStatsSnapshot) -> u64;

impl NetMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("vhost_net".into()), None)?;
        let family =
            |name: &str, help: &str, labels: &[&str]| counters(&registry, name, help, labels);
        let requests = family(
            "requests_total",
            "Chains served, by queue (rx: frames delivered, tx: frames sent)",
            &["queue"],
        )?;
        let bytes = family("bytes_total", "Frame bytes, by queue", &["queue"])?;
        let errors = family(
            "errors_total",
            "Chains refused or frames dropped, by queue and reason",
            &["queue", "reason"],
        )?;
        let ft_outputs = family(
            "ft_outputs_total",
            "FT: TX frames announced to the VMM and held, and those discarded unsent",
            &["fate"],
        )?;
        let ft_connections = family(
            "ft_connections_total",
            "FT control connections, by result",
            &["result"],
        )?;
        let single = |name: &str, help: &str| counter(&registry, name, help);
        let one = |f: &IntCounterVec, labels: &[&str]| f.with_label_values(labels);
        let series: Vec<(Field, IntCounter)> = vec![
            (|s| s.rx_frames, one(&requests, &["rx"])),
            (|s| s.tx_frames, one(&requests, &["tx"])),
            (|s| s.rx_bytes, one(&bytes, &["rx"])),
            (|s| s.tx_bytes, one(&bytes, &["tx"])),
            (|s| s.rx_bad_chains, one(&errors, &["rx", "bad_chain"])),
            (
                |s| s.rx_dropped_bad_header,
                one(&errors, &["rx", "bad_header"]),
            ),
            (
                |s| s.rx_dropped_bad_length,
                one(&errors, &["rx", "bad_length"]),
            ),
            (|s| s.rx_dropped_no_queue, one(&errors, &["rx", "no_queue"])),
            (|s| s.rx_tap_errors, one(&errors, &["rx", "tap"])),
            (|s| s.tx_bad_chains, one(&errors, &["tx", "bad_chain"])),
            (|s| s.tx_tap_errors, one(&errors, &["tx", "tap"])),
            (|s| s.used_ring_errors, one(&errors, &["any", "used_ring"])),
            (|s| s.ft_outputs, one(&ft_outputs, &["held"])),
            (|s| s.ft_outputs_discarded, one(&ft_outputs, &["discarded"])),
            (|s| s.ft_connections, one(&ft_connections, &["accepted"])),
            (|s| s.ft_bad_connections, one(&ft_connections, &["dropped"])),
            (
                |s| s.rx_no_buffer,
                single("rx_no_buffer_total", "Times the guest had no RX buffer")?,
            ),
            (
                |s| s.announces,
                single("announces_total", "RARP announcements of the guest MAC")?,
            ),
            (
                |s| s.ft_completions,
                single("ft_completions_total", "FT: completions sent to the VMM")?,
            ),
        ];
        Ok(NetMetrics { registry, series })
    }

    /// Copies the counters' current values into the registry (before a scrape).
    pub fn refresh(&self, stats: &NetStats) {
        let now = stats.snapshot();
        for (field, counter) in &self.series {
            metrics_http::mirror(counter, field(&now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_under_their_labels() {
        let m = NetMetrics::new().expect("metrics");
        let stats = NetStats::default();
        NetStats::add(&stats.tx_frames, 7);
        NetStats::inc(&stats.rx_bad_chains);
        m.refresh(&stats);
        NetStats::add(&stats.tx_frames, 3);
        m.refresh(&stats);
        let text = metrics_http::render(&m.registry);
        assert!(
            text.contains("vhost_net_requests_total{queue=\"tx\"} 10\n"),
            "{text}"
        );
        assert!(
            text.contains("vhost_net_errors_total{queue=\"rx\",reason=\"bad_chain\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("vhost_net_ft_outputs_total{fate=\"discarded\"} 0\n"),
            "{text}"
        );
    }
}
