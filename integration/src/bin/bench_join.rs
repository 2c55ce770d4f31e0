//! `make bench` part 5: joins of guests of real size (pre-copy). For each guest size a
//! primary boots with 90% of its memory in use (`guest.touch`, capped by what the test
//! guest's heap can reach), redis-benchmark and a timed INCR client load it, and a backup
//! joins. Reported from the primary's status: the guest's pause, the whole join, the rounds,
//! the bytes sent; from the client: its longest gap during the join. Round 0 (all memory in
//! use, sent while the guest runs) is what a stop-and-copy join of the same memory over the
//! same link would have paused the guest for. Writes markdown to the file named by the first
//! argument.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use integration::cluster::Cluster;
use integration::workload::{BenchLoop, Recorder};

/// (guest MiB, MiB touched): 90% in use, except the 64 MiB guest, whose kv server needs
/// some of its heap. Other sizes: `bench_join OUT.md MIB:TOUCHED ...`.
const SIZES: [(u64, u64); 3] = [(64, 40), (1024, 920), (4096, 3686)];
const RUNS: usize = 3;

struct Join {
    pause_ms: f64,
    total_ms: f64,
    rounds: u64,
    mib: f64,
    first_round_ms: f64,
    gap_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn one_join(mem: u64, touch: u64) -> Join {
    let extra = format!("guest.touch={touch}");
    let mut c = Cluster::start_sized(None, &extra, false, Some(mem)).expect("cluster");
    let t0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "bench:join", t0).expect("client");
    let bench = BenchLoop::start(&c.lab, 20000, 16);
    std::thread::sleep(Duration::from_secs(1));
    let from = t0.elapsed().as_secs_f64();
    c.spawn_backup().expect("backup");
    c.wait_joined(Duration::from_secs(300)).expect("joined");
    let to = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let st = c.primary_host().status().expect("status");
    let log = incr.finish();
    let _ = bench.finish();
    assert!(
        log.check_sequence().is_ok(),
        "INCR history: {:?}",
        log.check_sequence()
    );
    let ft = &st.ft;
    let f = |v: Option<f64>| v.unwrap_or(f64::NAN);
    let u = |v: Option<u64>| v.map_or(f64::NAN, |v| v as f64);
    Join {
        pause_ms: f(ft.ft_join_pause_ms),
        total_ms: f(ft.ft_join_total_ms),
        rounds: u64::from(ft.ft_join_rounds.unwrap_or(0)),
        mib: u(ft.ft_join_bytes) / f64::from(1u32 << 20),
        first_round_ms: u(ft.ft_join_first_round_ms),
        gap_ms: log.max_gap_between(from, to + 0.5),
    }
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: bench_join OUTPUT.md");
    let mut md = String::new();
    let _ = writeln!(md, "## Joining a backup: pre-copy by guest size\n");
    let _ = writeln!(
        md,
        "`cargo run --release -p integration --bin bench_join OUT.md`: a backup joins a primary \
         whose guest has the memory shown in use, under redis-benchmark (16 clients) and a timed \
         INCR client; median of {RUNS} joins per size (max in brackets). Round 0 sends all memory \
         in use while the guest runs: a stop-and-copy join would pause the guest about that long.\n"
    );
    let _ = writeln!(
        md,
        "| guest | in use | guest pause | whole join | rounds (1: all memory once, then the stop) | MiB sent | round 0 (= stop-and-copy pause) | client's longest gap |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    let asked: Vec<(u64, u64)> = std::env::args()
        .skip(2)
        .filter_map(|a| {
            let (m, t) = a.split_once(':')?;
            Some((m.parse().ok()?, t.parse().ok()?))
        })
        .collect();
    let sizes = if asked.is_empty() {
        SIZES.to_vec()
    } else {
        asked
    };
    for (mem, touch) in sizes {
        let joins: Vec<Join> = (0..RUNS).map(|_| one_join(mem, touch)).collect();
        let col = |g: &dyn Fn(&Join) -> f64| {
            let v: Vec<f64> = joins.iter().map(g).collect();
            let max = v.iter().copied().fold(f64::NAN, f64::max);
            (median(v), max)
        };
        let (pause, pause_max) = col(&|j| j.pause_ms);
        let (total, _) = col(&|j| j.total_ms);
        let (rounds, _) = col(&|j| j.rounds as f64);
        let (mib, _) = col(&|j| j.mib);
        let (first, _) = col(&|j| j.first_round_ms);
        let (gap, gap_max) = col(&|j| j.gap_ms);
        let _ = writeln!(
            md,
            "| {mem} MiB | {touch} MiB | {pause:.1} ms ({pause_max:.1}) | {total:.0} ms | {rounds:.0} | {mib:.0} | {first:.0} ms | {gap:.0} ms ({gap_max:.0}) |"
        );
        eprintln!("bench_join: {mem} MiB done");
    }
    std::fs::write(&out, md).expect("write the output");
}
