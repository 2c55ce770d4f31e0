//! `make test-long`: twenty joins of a 1 GiB guest with 900 MiB in use, under load. Each
//! backup joins, the pair is checked, and the backup is then killed so that the primary runs
//! unprotected and the next one joins. Every join must succeed with a guest pause under
//! 100 ms and no client gap above 150 ms during it; the figures are printed.

use std::time::{Duration, Instant};

use integration::cluster::Cluster;
use integration::workload::{wait_until, BenchLoop, Recorder};

const JOINS: usize = 20;

#[test]
#[ignore = "long (minutes): run by make test-long"]
fn twenty_joins_of_a_1gib_guest_in_use_under_load() {
    let mut c = Cluster::start_sized(None, "guest.touch=900", false, Some(1024)).expect("cluster");
    let t0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "soak:counter", t0).expect("incr client");
    let bench = BenchLoop::start(&c.lab, 20000, 16);
    let mut joins = Vec::new();
    for i in 0..JOINS {
        let from = t0.elapsed().as_secs_f64();
        c.spawn_backup().expect("backup");
        c.wait_joined(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("join {}: {e}", i + 1));
        let to = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(500));
        let st = c.primary_host().status().expect("status");
        let pause = st.ft.ft_join_pause_ms.unwrap_or(f64::NAN);
        let total = st.ft.ft_join_total_ms.unwrap_or(f64::NAN);
        joins.push((from, to + 0.5, pause, total));
        let _gone = c.kill_backup();
        let unprotected = wait_until(Duration::from_secs(10), || {
            c.primary_host()
                .status()
                .is_ok_and(|s| s.ft.ft_protected == Some(false))
        });
        assert!(
            unprotected,
            "join {}: the primary did not drop its backup",
            i + 1
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = incr.finish();
    bench.finish().expect("redis-benchmark through every join");
    log.assert_clean("INCR client");
    let mut worst = (0.0f64, 0.0f64);
    for (i, (from, to, pause, total)) in joins.iter().enumerate() {
        let gap = log.max_gap_between(*from, *to);
        eprintln!(
            "join {:2}: guest paused {pause:5.1} ms, join {total:6.0} ms, client's longest gap {gap:4.0} ms",
            i + 1
        );
        worst = (worst.0.max(*pause), worst.1.max(gap));
    }
    eprintln!(
        "{JOINS} joins: worst pause {:.1} ms, worst client gap {:.0} ms",
        worst.0, worst.1
    );
    assert!(worst.0 < 100.0, "a join paused the guest {:.1} ms", worst.0);
    assert!(
        worst.1 < 150.0,
        "a client waited {:.0} ms during a join",
        worst.1
    );
}
