//! Fault tolerance, end to end: a primary in host-a and a backup in host-b, each with its own
//! backends, the `kv` guest under a client workload. The backup must stay an exact copy.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
use std::time::{Duration, Instant};

use integration::cluster::Cluster;
use integration::resp::Reply;
use integration::stack::Lab;
use integration::workload::BenchLoop;

fn soak_seconds(default: u64) -> Duration {
    Duration::from_secs(
        std::env::var("FT_SOAK_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

/// An INCR loop on one connection, checking that every reply is the next number.
fn incr_loop(lab: &Lab, key: &[u8], duration: Duration) {
    let mut c = lab.connect().expect("connect");
    let start = Instant::now();
    let mut expected = 0;
    while start.elapsed() < duration {
        expected += 1;
        assert_eq!(c.cmd(&[b"INCR", key]).expect("incr"), Reply::Int(expected));
    }
}

/// redis-benchmark plus an INCR loop checking every reply, for `duration`.
fn workload(lab: &Lab, duration: Duration) {
    let bench = BenchLoop::start(lab, 2000, 8);
    incr_loop(lab, b"ft:counter", duration);
    let runs = bench.finish().expect("redis-benchmark");
    assert!(runs >= 1, "no benchmark run completed");
}

#[test]
fn backup_is_an_exact_replica_after_a_workload() {
    let mut c = Cluster::start(None, "", true).expect("cluster");
    workload(&c.lab, soak_seconds(60));
    ftctl_shows_the_pair(&mut c);
    c.assert_replica();
}

/// The operator's view of a protected pair through `ftctl`: each side's role, the
/// primary's backup and log figures, the backup's view of the log, and `watch` lines.
fn ftctl_shows_the_pair(c: &mut Cluster) {
    let (ok, table, err) = c.primary_host().ftctl(&["status"]).expect("ftctl");
    assert!(ok, "ftctl status on the primary: {err}");
    for want in [
        "role         primary",
        "protected    yes",
        "link         tls",
        "backup at",
        "ack lag",
    ] {
        assert!(table.contains(want), "no {want:?} in:\n{table}");
    }
    let (ok, json, err) = c
        .primary_host()
        .ftctl(&["status", "--json"])
        .expect("ftctl");
    assert!(ok, "{err}");
    let status: vmm_api::Status = serde_json::from_str(&json).expect("a typed status");
    assert!(status.ft.ft_records.unwrap_or(0) > 0, "{status:?}");
    let backup = c.backup_host().expect("a backup");
    let (ok, table, err) = backup.ftctl(&["status"]).expect("ftctl");
    assert!(ok, "ftctl status on the backup: {err}");
    assert!(
        table.contains("role         backup") && table.contains("primary at"),
        "{table}"
    );
    let (ok, watch, err) = c
        .primary_host()
        .ftctl(&["watch", "--interval", "0.3", "--count", "3"])
        .expect("ftctl");
    assert!(ok, "{err}");
    let lines: Vec<&str> = watch.lines().collect();
    assert_eq!(lines.len(), 4, "{watch}");
    assert!(lines[1..].iter().all(|l| l.contains("primary")), "{watch}");
}

#[test]
fn backup_joins_a_primary_that_served_traffic() {
    let mut c = Cluster::start(None, "", false).expect("cluster");
    workload(&c.lab, soak_seconds(30));
    // The join happens under load, and the load goes on through it.
    let bench = BenchLoop::start(&c.lab, 20000, 16);
    std::thread::sleep(Duration::from_secs(2));
    c.spawn_backup().expect("backup");
    c.wait_joined(Duration::from_secs(60))
        .expect("backup joined");
    let log = c.primary_host().vmm.output();
    let pause = log
        .lines()
        .find(|l| l.contains("backup joined"))
        .unwrap_or_default()
        .to_string();
    eprintln!("join: {pause}");
    incr_loop(&c.lab, b"after-join", Duration::from_secs(5));
    bench
        .finish()
        .expect("redis-benchmark through and after the join");
    c.assert_replica();
}

fn signal(pid: u32, sig: libc::c_int) {
    let pid = pid as libc::pid_t;
    // SAFETY: sends a signal to a child process this test started (by PID, never by name).
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

#[test]
fn output_rule_holds_replies_until_the_backup_acknowledges() {
    // A failure-detection timeout well above the stall, so that the stopped backup is waited
    // for rather than declared lost.
    let mut p = Cluster::start(Some(20_000), "", true).expect("cluster");
    let backup_pid = p.backup_host().expect("backup").vmm.pid().expect("pid");
    let mut c = p.lab.connect().expect("connect");
    assert_eq!(c.cmd(&[b"INCR", b"rule"]).expect("incr"), Reply::Int(1));
    let mut api = p.primary_host().api().expect("api");
    // Stall the logging channel: the stopped backup acknowledges nothing.
    signal(backup_pid, libc::SIGSTOP);
    let before = api.status().expect("status").landmark;
    let (tx, rx) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || {
        let reply = c.cmd(&[b"INCR", b"rule"]);
        let _ = tx.send(reply.map_err(|e| e.to_string()));
    });
    let held = rx.recv_timeout(Duration::from_millis(1500));
    let after = api.status().expect("status").landmark;
    signal(backup_pid, libc::SIGCONT);
    assert!(
        held.is_err(),
        "the reply left before the backup acknowledged the log: {held:?}"
    );
    assert!(
        after > before + 100,
        "the primary's guest stopped executing ({before} -> {after})"
    );
    let reply = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("reply after the backup resumed");
    assert_eq!(reply, Ok(Reply::Int(2)));
    client.join().expect("client thread");
}

#[test]
fn divergence_from_rdtsc_is_detected_by_the_backup() {
    let mut p = Cluster::start(None, "guest.rdtsc=1", true).expect("cluster");
    let mut c = p.lab.connect().expect("connect");
    // The guest answers with its time-stamp counter: the backup's guest computes another value,
    // so the reply frame differs from the one the primary sent.
    let reply = c.cmd(&[b"RDTSC"]).expect("rdtsc");
    assert!(matches!(reply, Reply::Int(n) if n > 0), "{reply:?}");
    let backup = p.backup_host().expect("backup");
    let status = backup
        .vmm
        .wait(Duration::from_secs(20))
        .expect("the backup stopped");
    assert_eq!(status.code(), Some(7), "{}", backup.vmm.output());
    let out = backup.vmm.output();
    assert!(out.contains("backup diverged at landmark"), "{out}");
    p.primary_host()
        .vmm
        .wait_for("UNPROTECTED", 0, Duration::from_secs(10))
        .expect("primary reports it");
    // The primary carries on without its backup.
    assert_eq!(c.cmd(&[b"INCR", b"after"]).expect("incr"), Reply::Int(1));
}
