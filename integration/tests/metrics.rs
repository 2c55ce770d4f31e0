//! Prometheus metrics of a running FT pair: every process's `/metrics` (scraped with curl,
//! as Prometheus would) passes `promtool check metrics`, says what the pair is doing, and
//! moves under load, including while the load runs.

use std::time::{Duration, Instant};

use integration::cluster::Cluster;
use integration::metrics::{promtool_check, sum, value, Component};
use integration::stack::Host;
use integration::workload::BenchLoop;

/// Scrapes `c` of `host`, checks it with promtool, and returns the text.
fn checked(host: &Host, c: Component) -> String {
    let text = host
        .scrape(c)
        .unwrap_or_else(|e| panic!("scrape {c:?}: {e}"));
    if let Err(e) = promtool_check(&text) {
        panic!("{c:?} metrics rejected: {e}\n{text}");
    }
    text
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// The figures that must grow while the guest serves clients.
fn moving(vmm: &str, net: &str, blk: &str) -> [(&'static str, f64); 8] {
    [
        ("vmm landmark", must(vmm, "vmm_landmark")),
        (
            "vmm log bytes sent",
            must(vmm, "vmm_ft_log_bytes_total{direction=\"sent\"}"),
        ),
        ("vmm records sent", sum(vmm, "vmm_ft_log_records_total")),
        (
            "vmm held outputs",
            must(vmm, "vmm_ft_output_hold_seconds_count"),
        ),
        ("vmm completions", sum(vmm, "vmm_virtio_completions_total")),
        (
            "net tx frames",
            must(net, "vhost_net_requests_total{queue=\"tx\"}"),
        ),
        ("blk requests", sum(blk, "vhost_blk_requests_total")),
        (
            "blk NBD replies",
            sum(blk, "vhost_blk_nbd_request_seconds_count"),
        ),
    ]
}

fn snapshot(host: &Host) -> [(&'static str, f64); 8] {
    let (vmm, net, blk) = (
        checked(host, Component::Vmm),
        checked(host, Component::Net),
        checked(host, Component::Blk),
    );
    moving(&vmm, &net, &blk)
}

fn assert_grew(before: &[(&str, f64)], after: &[(&str, f64)], when: &str) {
    for ((name, a), (_, b)) in before.iter().zip(after) {
        assert!(b > a, "{name} did not grow {when}: {a} -> {b}");
    }
}

#[test]
fn a_protected_pair_exposes_metrics_that_promtool_accepts_and_that_move_under_load() {
    integration::require_environment();
    let mut c = Cluster::start(None, "", true).expect("cluster");

    // The pair's state, as an operator's dashboard would show it.
    let primary = checked(c.primary_host(), Component::Vmm);
    assert_eq!(must(&primary, "vmm_ft_role{role=\"primary\"}"), 1.0);
    assert_eq!(must(&primary, "vmm_ft_role{role=\"backup\"}"), 0.0);
    assert_eq!(must(&primary, "vmm_ft_protected"), 1.0);
    assert!(must(&primary, "vmm_ft_epoch") >= 1.0, "{primary}");
    assert_eq!(must(&primary, "vmm_ft_joins_total"), 1.0);
    assert_eq!(must(&primary, "vmm_ft_join_pause_seconds_count"), 1.0);
    let backup_host = c.backup_host().expect("a backup");
    let backup = checked(backup_host, Component::Vmm);
    assert_eq!(must(&backup, "vmm_ft_role{role=\"backup\"}"), 1.0);
    let received = |t: &str| must(t, "vmm_ft_log_bytes_total{direction=\"received\"}");
    let backup_received = received(&backup);
    // The backup's backends are connected but serve nothing until it goes live.
    let backup_net = checked(backup_host, Component::Net);
    assert_eq!(
        must(&backup_net, "vhost_net_requests_total{queue=\"tx\"}"),
        0.0
    );

    let before = snapshot(c.primary_host());
    let bench = BenchLoop::start(&c.lab, 5000, 8);
    // Scrapes during the load: each is answered, valid, and later ones see more.
    let t = Instant::now();
    let mut during = Vec::new();
    while t.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(1500));
        during.push(snapshot(c.primary_host()));
    }
    let runs = bench.finish().expect("redis-benchmark");
    assert!(runs >= 1, "no benchmark run completed");
    let after = snapshot(c.primary_host());
    assert!(during.len() >= 3, "only {} scrapes in 6 s", during.len());
    assert_grew(&before, &during[0], "in the first seconds of load");
    assert_grew(&during[0], &during[during.len() - 1], "during the load");
    assert_grew(&before, &after, "over the load");

    let primary = checked(c.primary_host(), Component::Vmm);
    assert!(
        must(&primary, "vmm_ft_lag_seconds_count") > 0.0,
        "no backup heartbeat measured: {primary}"
    );
    let backup = checked(c.backup_host().expect("backup"), Component::Vmm);
    assert!(received(&backup) > backup_received, "{backup}");
    assert!(
        sum(&backup, "vmm_ft_log_records_total") > 0.0,
        "the backup counted no records: {backup}"
    );
    for (name, v) in after {
        eprintln!(
            "{name}: {} -> {v}",
            before.iter().find(|b| b.0 == name).map_or(0.0, |b| b.1)
        );
    }
}

#[test]
fn the_metrics_endpoint_refuses_what_is_not_a_scrape_and_keeps_serving() {
    integration::require_environment();
    let c = Cluster::start(None, "", false).expect("cluster");
    let host = c.hosts[c.primary].as_ref().expect("primary");
    // A request that is not GET /metrics gets an HTTP error, and the next scrape works.
    let ns = c.lab.topo.ns(&host.role);
    let url = format!("http://127.0.0.1:{}/other", Component::Vmm.port());
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    let text = checked(host, Component::Vmm);
    // An unprotected primary says so.
    assert_eq!(must(&text, "vmm_ft_protected"), 0.0, "{text}");
    assert_eq!(must(&text, "vmm_ft_role{role=\"primary\"}"), 1.0, "{text}");
}
