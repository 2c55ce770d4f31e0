//! Failover, end to end: primary and backup in host-a and host-b, the arbiter and qemu-nbd in
//! storage, clients that never reconnect. Kill or partition things and check that the client
//! sees one consistent history with nothing acknowledged lost.

use std::time::{Duration, Instant};

use integration::cluster::{Cluster, HOSTS, LIVE};
use integration::workload::{verify_writes, wait_until, BenchLoop, Recorder};

/// Unprotected primary (it won the arbiter after losing its backup).
const UNPROTECTED: &str = "UNPROTECTED";

#[test]
fn killing_the_primary_loses_no_connection_and_no_increment() {
    let mut c = Cluster::start(None, "", true).expect("cluster");
    let t0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "fo:counter", t0).expect("incr client");
    let bench = BenchLoop::start(&c.lab, 2000, 8);
    std::thread::sleep(Duration::from_secs(3));
    let killed_at = t0.elapsed();
    let _dead = c.kill_primary();
    c.wait_live(Duration::from_secs(10))
        .expect("backup goes live");
    std::thread::sleep(Duration::from_secs(3));
    let log = incr.finish();
    let runs = bench
        .finish()
        .expect("redis-benchmark through the failover");
    log.assert_clean("INCR client");
    let before = log
        .samples
        .iter()
        .filter(|s| s.at_s < killed_at.as_secs_f64())
        .count();
    assert!(
        before > 0 && before < log.samples.len(),
        "replies before and after the kill: {before} of {}",
        log.samples.len()
    );
    assert!(runs >= 1, "no benchmark run completed");
    eprintln!(
        "failover: {} INCR replies, longest gap {:.0} ms, {runs} benchmark runs",
        log.samples.len(),
        log.max_gap_ms()
    );
    // The counter the new primary holds is the last one the client was told.
    let mut client = c.lab.connect().expect("connect");
    let last = log.samples.last().map(|s| s.value).unwrap_or(0);
    assert_eq!(
        client.cmd(&[b"GET", b"fo:counter"]).expect("get"),
        integration::resp::Reply::Bulk(Some(last.to_string().into_bytes()))
    );
}

#[test]
fn killing_the_backup_leaves_the_primary_running_until_a_replacement_joins() {
    let mut c = Cluster::start(None, "", true).expect("cluster");
    let t0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "kb:counter", t0).expect("incr client");
    let bench = BenchLoop::start(&c.lab, 2000, 8);
    std::thread::sleep(Duration::from_secs(2));
    c.kill_backup().expect("a backup ran");
    c.primary_host()
        .vmm
        .wait_for(UNPROTECTED, 0, Duration::from_secs(10))
        .expect("primary goes on alone");
    std::thread::sleep(Duration::from_secs(2));
    let out = c.arbiter.status().expect("arbiter status");
    assert!(out.contains(HOSTS[c.primary]), "arbiter flags: {out}");
    // A replacement backup somewhere else (here: another port): the control socket tells the
    // primary where to find it, and it joins while the clients go on.
    c.spawn_backup_at(7001).expect("replacement backup");
    c.protect(7001).expect("protect");
    c.wait_joined(Duration::from_secs(60))
        .expect("the replacement joins");
    std::thread::sleep(Duration::from_secs(1));
    let log = incr.finish();
    bench
        .finish()
        .expect("redis-benchmark while the backup died and was replaced");
    log.assert_clean("INCR client");
    let status = c.primary_host().status().expect("status");
    assert_eq!(status.ft.ft_protected, Some(true), "{status:?}");
}

#[test]
fn powering_off_the_backups_host_leaves_the_primary_running() {
    let mut c = Cluster::start(None, "", true).expect("cluster");
    let t0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "pb:counter", t0).expect("incr client");
    std::thread::sleep(Duration::from_secs(2));
    let off = t0.elapsed().as_secs_f64();
    c.power_off_backup()
        .expect("power off")
        .expect("a backup ran");
    c.primary_host()
        .vmm
        .wait_for(UNPROTECTED, 0, Duration::from_secs(10))
        .expect("primary goes on alone after the heartbeat timeout");
    std::thread::sleep(Duration::from_secs(2));
    let log = incr.finish();
    log.assert_clean("INCR client");
    let (_, pause) = log.outage_after(off).expect("replies after the power-off");
    eprintln!("backup power-off: the client waited {pause:.0} ms at most");
    // Nothing leaves before the primary knows it may go on alone (timeout 300 ms + arbiter).
    assert!(
        pause >= 250.0,
        "outputs left before the verdict? pause {pause:.0} ms"
    );
}

/// Waits until exactly one side went on alone; returns the index of the winner after
/// checking that the other halted with status 9.
fn one_winner(c: &mut Cluster, timeout: Duration) -> usize {
    let p = c.primary;
    let b = c.backup_index();
    let said = |c: &Cluster, i: usize, what: &str| {
        c.hosts[i]
            .as_ref()
            .is_some_and(|h| h.vmm.output().contains(what))
    };
    let decided = wait_until(timeout, || said(c, p, UNPROTECTED) || said(c, b, LIVE));
    assert!(decided, "nobody went live");
    let winner = if said(c, p, UNPROTECTED) { p } else { b };
    let loser = 1 - winner;
    let host = c.hosts[loser].as_mut().expect("loser host");
    let status = host
        .vmm
        .wait(Duration::from_secs(10))
        .expect("the loser halts");
    assert_eq!(status.code(), Some(9), "{}", host.vmm.output());
    assert!(
        !said(c, winner, UNPROTECTED) || !said(c, loser, LIVE),
        "both sides went live"
    );
    if winner == b {
        c.primary = b;
    }
    winner
}

#[test]
fn a_partitioned_pair_has_exactly_one_survivor() {
    let mut c = Cluster::start(None, "", true).expect("cluster");
    let t0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "part:counter", t0).expect("incr client");
    std::thread::sleep(Duration::from_secs(2));
    c.set_ft_link(false).expect("cut the logging link");
    let winner = one_winner(&mut c, Duration::from_secs(10));
    eprintln!("partition: {} survived", HOSTS[winner]);
    std::thread::sleep(Duration::from_secs(2));
    let log = incr.finish();
    log.assert_clean("INCR client");
}

#[test]
fn with_the_arbiter_down_nobody_goes_live_until_it_is_back() {
    let mut c = Cluster::start(None, "", true).expect("cluster");
    let t0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "arb:counter", t0).expect("incr client");
    std::thread::sleep(Duration::from_secs(1));
    c.arbiter.kill();
    c.set_ft_link(false).expect("cut the logging link");
    let cut = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    for (name, host) in HOSTS.iter().zip(c.hosts.iter_mut()) {
        let host = host.as_mut().expect("host");
        assert!(host.vmm.try_status().is_none(), "{name} exited");
        let out = host.vmm.output();
        assert!(!out.contains(LIVE) && !out.contains(UNPROTECTED), "{out}");
        assert!(out.contains("unreachable"), "{name} never asked: {out}");
    }
    c.arbiter.restart().expect("arbiter back");
    let arbiter_back = t0.elapsed().as_secs_f64();
    one_winner(&mut c, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let log = incr.finish();
    log.assert_clean("INCR client");
    // No reply reached the client while nobody was allowed to go on (outputs held).
    let during = log
        .samples
        .iter()
        .filter(|s| {
            s.at_s + s.latency_ms / 1e3 > cut + 0.5 && s.at_s + s.latency_ms / 1e3 < arbiter_back
        })
        .count();
    assert_eq!(during, 0, "replies while the arbiter was down");
}

/// An idle guest handles every interrupt and EOIs it: some status sample must show nothing in
/// service on the PICs. An injection lost across a failover leaves its vector in service for
/// good, and with it every lower-priority device stops interrupting (the guest then only
/// notices completions at timer ticks).
fn assert_no_interrupt_stuck_in_service(c: &mut Cluster) {
    let mut api = c.primary_host().api().expect("api");
    let mut seen = Vec::new();
    for _ in 0..50 {
        let s = api.status().expect("status");
        let isr = s.pic.isr;
        if isr == [0, 0] {
            return;
        }
        seen.push(isr);
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("an interrupt stays in service on the PIC: {seen:?}");
}

#[test]
fn ten_failovers_with_reprotection_lose_no_acknowledged_write() {
    let rounds: usize = std::env::var("FT_FAILOVERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut c = Cluster::start(None, "", true).expect("cluster");
    let t0 = Instant::now();
    let writes = Recorder::writes(&c.lab, "soak:", t0).expect("writer");
    let incr = Recorder::incr(&c.lab, "soak:counter", t0).expect("incr client");
    let bench = BenchLoop::start(&c.lab, 1000, 4);
    for round in 1..=rounds {
        std::thread::sleep(Duration::from_millis(1500));
        let killed = Instant::now();
        let _dead = c.kill_primary();
        c.wait_live(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let live = killed.elapsed();
        let join = c
            .reprotect()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        eprintln!(
            "round {round}: {} live after {:.0} ms; re-protected in {:.0} ms",
            HOSTS[c.primary],
            live.as_secs_f64() * 1e3,
            join.as_secs_f64() * 1e3
        );
        assert!(
            writes.is_running() && incr.is_running(),
            "a client failed in round {round}"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    let written = writes.finish();
    let counted = incr.finish();
    let stopping = Instant::now();
    bench
        .finish()
        .expect("redis-benchmark through the failovers");
    eprintln!(
        "longest pauses: SET client {:.0} ms, INCR client {:.0} ms; last benchmark run ended {:.1} s after the stop",
        written.max_gap_ms(),
        counted.max_gap_ms(),
        stopping.elapsed().as_secs_f64()
    );
    written.assert_clean("SET client");
    counted.assert_clean("INCR client");
    let n = verify_writes(&c.lab, "soak:", &written).expect("every acknowledged write");
    assert_no_interrupt_stuck_in_service(&mut c);
    eprintln!("soak: {rounds} failovers, {n} acknowledged writes all present");
}
