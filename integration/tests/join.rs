//! Joins of guests of real size (pre-copy): a backup joins a primary whose guest has most of
//! its memory in use while clients load it; the join converges (throttling a guest that
//! dirties memory too fast), leaves an exact replica, and a join that is cut leaves the
//! primary serving.

use std::time::{Duration, Instant};

use integration::cgroup::CpuLimit;
use integration::cluster::Cluster;
use integration::workload::{wait_until, BenchLoop, Recorder};

const MIB: u64 = 1 << 20;

/// The primary's "backup joined" log line.
fn join_line(c: &mut Cluster) -> String {
    c.primary_host()
        .vmm
        .output()
        .lines()
        .find(|l| l.contains("backup joined"))
        .unwrap_or_default()
        .to_string()
}

/// Waits until the primary reports a join in progress (its pre-copy runs).
fn wait_precopy(c: &mut Cluster) {
    let seen = wait_until(Duration::from_secs(60), || {
        c.primary_host()
            .status()
            .is_ok_and(|s| s.ft.ft_join.is_some())
    });
    assert!(seen, "no pre-copy seen: {}", c.primary_host().vmm.output());
}

#[test]
fn a_1gib_guest_in_use_joins_under_load_as_an_exact_replica_and_fails_over() {
    let mut c = Cluster::start_sized(None, "guest.touch=900 guest.dirty=64", false, Some(1024))
        .expect("cluster");
    let t0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "join:counter", t0).expect("incr client");
    let bench = BenchLoop::start(&c.lab, 20000, 16);
    std::thread::sleep(Duration::from_secs(1));
    let join_at = t0.elapsed().as_secs_f64();
    c.spawn_backup().expect("backup");
    c.wait_joined(Duration::from_secs(120))
        .expect("backup joined");
    let joined_at = t0.elapsed().as_secs_f64();
    let line = join_line(&mut c);
    eprintln!("join: {line}");
    assert!(line.contains("the guest paused"), "{line}");
    let st = c.primary_host().status().expect("status");
    assert_eq!(st.ft.ft_protected, Some(true), "{st:?}");
    assert!(st.ft.ft_join_rounds.unwrap_or(0) >= 1, "{st:?}");
    assert!(
        st.ft.ft_join_bytes.unwrap_or(0) >= 900 * MIB,
        "the memory in use travelled: {st:?}"
    );
    c.assert_replica();
    // A failover right after the join loses nothing.
    let killed_at = t0.elapsed().as_secs_f64();
    let _dead = c.kill_primary();
    c.wait_live(Duration::from_secs(10))
        .expect("backup goes live");
    std::thread::sleep(Duration::from_secs(2));
    let log = incr.finish();
    bench
        .finish()
        .expect("redis-benchmark through the join and the failover");
    log.assert_clean("INCR client");
    eprintln!(
        "join under load: longest client gap {:.0} ms during the join, {:.0} ms in all ({} replies)",
        log.max_gap_between(join_at, joined_at),
        log.max_gap_between(0.0, killed_at),
        log.samples.len()
    );
    let mut client = c.lab.connect().expect("connect");
    let last = log.samples.last().map(|s| s.value).unwrap_or(0);
    let got = client.cmd(&[b"GET", b"join:counter"]).expect("get");
    assert_eq!(
        got,
        integration::resp::Reply::Bulk(Some(last.to_string().into_bytes())),
        "the new primary holds the last value the client was told"
    );
}

#[test]
fn a_guest_that_dirties_faster_than_the_link_is_throttled_until_the_join_converges() {
    // The guest rewrites its 256 MiB as fast as it can; the backup (and so the link) gets
    // 10% of a CPU during the join, so that the link is the bottleneck, as a real network
    // is: only slowing the guest down lets the rounds shrink.
    let mut c = Cluster::start_sized(None, "guest.touch=256 guest.dirty=4096", false, Some(512))
        .expect("cluster");
    c.spawn_backup().expect("backup");
    let pid = c.backup_host().expect("backup").vmm.pid().expect("pid");
    let slow = CpuLimit::new(pid, 10).expect("cgroup v1 cpu quota for the backup");
    wait_precopy(&mut c);
    let mut throttled = false;
    let joined = wait_until(Duration::from_secs(120), || {
        let st = c.primary_host().status();
        throttled |= st
            .as_ref()
            .is_ok_and(|s| s.ft.ft_join.as_ref().is_some_and(|j| j.throttle_pct > 0));
        st.is_ok_and(|s| s.ft.ft_protected == Some(true))
    });
    drop(slow);
    let out = c.primary_host().vmm.output();
    assert!(joined, "no join: {out}");
    assert!(throttled, "the status never showed throttling: {out}");
    assert!(out.contains("throttling the guest by"), "{out}");
    eprintln!("join: {}", join_line(&mut c));
    let st = c.primary_host().status().expect("status");
    assert!(st.ft.ft_join_throttle_max_pct.unwrap_or(0) > 0, "{st:?}");
    c.wait_joined(Duration::from_secs(60))
        .expect("backup loaded the state");
    c.assert_replica();
}

#[test]
fn a_cut_join_leaves_the_primary_serving_and_a_later_join_succeeds() {
    let mut c = Cluster::start_sized(None, "guest.touch=900", false, Some(1024)).expect("cluster");
    let t0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "cut:counter", t0).expect("incr client");

    // 1. The backup dies in the middle of the transfer.
    c.spawn_backup().expect("backup");
    wait_precopy(&mut c);
    let _dead = c.kill_backup();
    c.primary_host()
        .vmm
        .wait_for(
            "state transfer to the backup failed",
            0,
            Duration::from_secs(10),
        )
        .expect("the primary notices");
    let st = c.primary_host().status().expect("status");
    assert_eq!(st.ft.ft_protected, Some(false), "{st:?}");

    // 2. The logging link goes down in the middle of the next transfer: both watchdogs see
    // the silence; the backup waits for a primary again, and once the link is back the
    // primary's joiner finds it and the join completes.
    let from = c.primary_host().vmm.output().len();
    c.spawn_backup().expect("backup");
    wait_precopy(&mut c);
    c.set_ft_link(false).expect("link down");
    let backup = c.backup_host().expect("backup");
    backup
        .vmm
        .wait_for("waiting for a primary again", 0, Duration::from_secs(10))
        .expect("the backup gives the transfer up");
    assert!(
        backup.vmm.try_status().is_none(),
        "the backup must keep waiting"
    );
    c.primary_host()
        .vmm
        .wait_for(
            "state transfer to the backup failed",
            from,
            Duration::from_secs(10),
        )
        .expect("the primary gives the transfer up");
    c.set_ft_link(true).expect("link up");
    c.wait_joined(Duration::from_secs(120))
        .expect("joined after the link came back");
    let log = incr.finish();
    log.assert_clean("INCR client");
    eprintln!(
        "cut joins: {} replies, longest client gap {:.0} ms",
        log.samples.len(),
        log.max_gap_ms()
    );
    c.assert_replica();
}

#[test]
fn a_primary_that_dies_during_the_transfer_leaves_the_backup_waiting_for_another() {
    let mut c = Cluster::start_sized(None, "guest.touch=400", false, Some(512)).expect("cluster");
    c.spawn_backup().expect("backup");
    wait_precopy(&mut c);
    let _dead = c.kill_primary();
    let backup = c.backup_host().expect("backup");
    backup
        .vmm
        .wait_for("waiting for a primary again", 0, Duration::from_secs(10))
        .expect("the backup discards the partial state");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        backup.vmm.try_status().is_none(),
        "the backup must keep waiting"
    );
    let out = backup.vmm.output();
    assert!(
        !out.contains("asking the arbiter"),
        "a partial state never goes live: {out}"
    );
    assert!(!out.contains(integration::cluster::LIVE), "{out}");
}
