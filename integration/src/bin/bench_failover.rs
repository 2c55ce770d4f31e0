//! `make bench` part 4: failover and re-protection, measured by a client that INCRs one key
//! on one connection (every reply timed) while redis-benchmark runs. One FT pair fails over
//! back and forth: first `ROUNDS` times by SIGKILL of the primary's vmm and backends (the
//! kernel closes the logging connection, so the backup notices at once), then `ROUNDS` times
//! by a power-off of the primary's host (links down first: only the heartbeat timeout tells).
//! After each failover a new backup joins. Writes markdown to the file named by the first
//! argument.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use integration::cluster::Cluster;
use integration::workload::{BenchLoop, Recorder};

const ROUNDS: usize = 5;

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    // A rank between 0 and len - 1 (p is a fraction).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

struct Round {
    kind: &'static str,
    killed_s: f64,
    reprotect_s: f64,
    reprotected_s: f64,
    join_pause_ms: f64,
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: bench_failover OUTPUT.md");
    let mut c = Cluster::start(None, "", true).expect("FT cluster");
    let t0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "bench:counter", t0).expect("client");
    let bench = BenchLoop::start(&c.lab, 2000, 8);
    let mut rounds = Vec::new();
    for i in 0..2 * ROUNDS {
        let power_off = i >= ROUNDS;
        std::thread::sleep(Duration::from_secs(2));
        let killed_s = t0.elapsed().as_secs_f64();
        let host = if power_off {
            c.power_off_primary().expect("power off")
        } else {
            c.kill_primary()
        };
        let dead = c.primary;
        c.wait_live(Duration::from_secs(30))
            .expect("backup goes live");
        drop(host);
        std::thread::sleep(Duration::from_secs(2));
        if power_off {
            c.power_on(dead).expect("links up");
        }
        let reprotect_s = t0.elapsed().as_secs_f64();
        c.reprotect().expect("re-protection");
        // The join's pause shows in replies that arrive just after it.
        std::thread::sleep(Duration::from_millis(500));
        rounds.push(Round {
            kind: if power_off { "power-off" } else { "SIGKILL" },
            killed_s,
            reprotect_s,
            reprotected_s: t0.elapsed().as_secs_f64(),
            join_pause_ms: c
                .primary_host()
                .status()
                .ok()
                .and_then(|s| s.ft.ft_join_pause_ms)
                .unwrap_or(f64::NAN),
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    let log = incr.finish();
    let runs = bench.finish();
    assert!(log.error.is_none(), "client failed: {:?}", log.error);
    log.check_sequence().expect("INCR replies in sequence");
    runs.expect("redis-benchmark");

    if std::env::var_os("BENCH_GAPS").is_some() {
        for w in log.samples.windows(2) {
            let gap = (w[1].at_s + w[1].latency_ms / 1e3 - w[0].at_s - w[0].latency_ms / 1e3) * 1e3;
            if gap > 100.0 {
                eprintln!(
                    "gap {gap:.0} ms ending at {:.3} s",
                    w[1].at_s + w[1].latency_ms / 1e3
                );
            }
        }
        for r in &rounds {
            eprintln!(
                "{} at {:.3} s, re-protection at {:.3} s",
                r.kind, r.killed_s, r.reprotect_s
            );
        }
    }
    let mut md = String::from("## Failover and re-protection\n\n");
    let _ = writeln!(
        md,
        "One FT pair (default settings: heartbeat 50 ms, timeout 300 ms) fails over {} times under load\n(redis-benchmark -c 8 plus a client INCRing one key on one connection, every reply timed).\nEach failover is followed by re-protection (a new backup joins). *Failover time*: from the\nfailure to the reply that ends the client's outage; *pause*: the longest time between two\nreplies around it. SIGKILL of the primary's vmm and backends lets the kernel close the logging\nconnection, so the backup notices at once; a power-off (the host's links go down first) is\nonly noticed by the heartbeat timeout.\n",
        2 * ROUNDS
    );
    md.push_str("| failure | runs | failover time p50 / max | client-visible pause p50 / max |\n| --- | --- | --- | --- |\n");
    for kind in ["SIGKILL", "power-off"] {
        let outages: Vec<(f64, f64)> = rounds
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| log.outage_after(r.killed_s))
            .collect();
        let times: Vec<f64> = outages.iter().map(|o| o.0).collect();
        let pauses: Vec<f64> = outages.iter().map(|o| o.1).collect();
        let _ = writeln!(
            md,
            "| {kind} | {} | {:.0} ms / {:.0} ms | {:.0} ms / {:.0} ms |",
            times.len(),
            pct(times.clone(), 0.5),
            pct(times, 1.0),
            pct(pauses.clone(), 0.5),
            pct(pauses, 1.0)
        );
    }
    let joins: Vec<f64> = rounds.iter().map(|r| r.join_pause_ms).collect();
    let reprotect_pauses: Vec<f64> = rounds
        .iter()
        .map(|r| log.max_gap_between(r.reprotect_s, r.reprotected_s))
        .collect();
    md.push_str("\n| re-protection | p50 | max |\n| --- | --- | --- |\n");
    let _ = writeln!(
        md,
        "| guest paused for the state transfer (vmm's own measure) | {:.0} ms | {:.0} ms |",
        pct(joins.clone(), 0.5),
        pct(joins, 1.0)
    );
    let _ = writeln!(
        md,
        "| client-visible pause during re-protection (longest time between two replies) | {:.0} ms | {:.0} ms |",
        pct(reprotect_pauses.clone(), 0.5),
        pct(reprotect_pauses, 1.0)
    );
    let _ = writeln!(
        md,
        "\n{} INCR replies, all in sequence, on one connection through every failover.\nCommand: `cargo run --release -p integration --bin bench_failover OUT.md` (part of `make bench`).",
        log.samples.len()
    );
    std::fs::write(&out, &md).expect("write output");
    print!("{md}");
}
