//! `make demo`: a full failover cycle. Namespaces client, storage, host-a and host-b; qemu-nbd
//! and the arbiter in storage; the `kv` guest as an FT primary in host-a with its backup in
//! host-b. A client increments a counter (recording every reply) while redis-benchmark runs;
//! then host-a loses power (its links go down, then its vmm and backends get SIGKILL, so the
//! backup learns of it only through the missing heartbeats), host-b asks the arbiter and goes
//! live, and a new backup is started in host-a (re-protection). Prints a timeline with the measured failover time and
//! writes the client's latency over time to build/failover-latency.svg.
//! With a terminal the cluster stays up afterwards until Enter or Ctrl-C (`DEMO_SECONDS` sets
//! a limit). `ARBITER=etcd` uses a three-member etcd cluster as the arbiter (`--arbiter
//! etcd://...`). Everything is torn down at the end.

use std::io::{BufRead, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use integration::cluster::{Cluster, HOSTS};
use integration::plot::{latency_svg, Event};
use integration::stack::Host;
use integration::topology::GUEST_IP;
use integration::workload::{BenchLoop, Recorder};

/// Set by Ctrl-C, SIGTERM or Enter.
static STOP: std::sync::LazyLock<std::sync::Arc<AtomicBool>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(AtomicBool::new(false)));

fn step(t0: Instant, what: &str) {
    println!("[{:>7.3} s] {what}", t0.elapsed().as_secs_f64());
}

fn join_pause_ms(host: &Host) -> f64 {
    host.status()
        .ok()
        .and_then(|s| s.ft.ft_join_pause_ms)
        .unwrap_or(f64::NAN)
}

/// The vmm's own account of the failover: its `ft:` log lines from `from` on.
fn ft_lines(host: &Host) -> Vec<String> {
    host.vmm
        .output()
        .lines()
        .filter(|l| l.contains("ft: primary lost") || l.contains("LIVE") || l.contains("joined"))
        .map(|l| format!("    {}: {l}", host.role))
        .collect()
}

fn main() {
    // Ctrl-C (or SIGTERM) sets STOP, so that the teardown below still runs.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, std::sync::Arc::clone(&STOP)) {
            eprintln!("demo: cannot handle signal {sig}: {e}");
        }
    }
    let t0 = Instant::now();
    // ARBITER=etcd (make demo ARBITER=etcd): the pair asks a three-member etcd cluster.
    let etcd = std::env::var("ARBITER").is_ok_and(|a| a == "etcd");
    let arbiter = match etcd {
        true => "a three-member etcd cluster (the arbiter)",
        false => "the arbiter",
    };
    step(t0, &format!("starting: namespaces client/storage/host-a/host-b, qemu-nbd + {arbiter} in storage, backup in host-b, primary in host-a"));
    let started = match etcd {
        true => Cluster::start_etcd(None),
        false => Cluster::start(None, "", true),
    };
    let mut c = started.expect("FT cluster");
    let join_ms = join_pause_ms(c.primary_host());
    step(t0, &format!("host-a: primary running, guest kv ready at {GUEST_IP}:6379; host-b: backup joined (the guest paused {join_ms:.1} ms for the state transfer)"));
    let link = c
        .primary_host()
        .status()
        .ok()
        .and_then(|s| s.ft.ft_link)
        .unwrap_or_else(|| "?".into());
    step(t0, &format!("logging channel: {link} (mutual TLS 1.3; certificates of a throwaway CA in {}/host-*-tls)", c.lab.dir.path().display()));

    let w0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "demo:counter", w0).expect("INCR client");
    let bench = BenchLoop::start(&c.lab, 2000, 8);
    step(
        t0,
        "client: INCR demo:counter in a loop on one TCP connection (every reply recorded) + redis-benchmark -c 8",
    );
    show_ftctl(c.primary_host(), &["watch", "--count", "3"], "host-a");
    show_ftctl(c.primary_host(), &["status"], "host-a");
    std::thread::sleep(Duration::from_secs(1));

    let killed = w0.elapsed().as_secs_f64();
    let dead = c.power_off_primary().expect("power off host-a");
    step(
        t0,
        "host-a loses power: its links go down, its vmm, vhost-net-ft and vhost-blk-remote get SIGKILL",
    );
    c.wait_live(Duration::from_secs(30))
        .expect("backup goes live");
    let live = w0.elapsed().as_secs_f64();
    step(
        t0,
        &format!(
            "host-b: backup is LIVE {:.0} ms after the kill",
            (live - killed) * 1e3
        ),
    );
    for l in ft_lines(c.primary_host()) {
        println!("{l}");
    }
    drop(dead);
    show_ftctl(c.primary_host(), &["status"], "host-b");
    std::thread::sleep(Duration::from_secs(3));

    c.power_on(0).expect("host-a links up");
    step(
        t0,
        "host-a: power back; starting a new backup there (re-protection)",
    );
    let reprotect_start = w0.elapsed().as_secs_f64();
    let join = c.reprotect().expect("re-protection");
    let reprotected = w0.elapsed().as_secs_f64();
    let pause = join_pause_ms(c.primary_host());
    step(
        t0,
        &format!(
            "host-a: new backup joined {:.0} ms after its start; the guest paused {pause:.1} ms; protected again",
            join.as_secs_f64() * 1e3
        ),
    );
    std::thread::sleep(Duration::from_secs(3));
    let log = incr.finish();
    let bench = bench.finish();

    println!("\nResults");
    let (failover_ms, pause_ms) = log.outage_after(killed).unwrap_or((f64::NAN, f64::NAN));
    println!(
        "  failover time (power-off to the first reply after the outage): {failover_ms:.0} ms"
    );
    println!("  client-visible pause (longest time between two replies then):  {pause_ms:.0} ms");
    println!(
        "  longest pause between two replies in the whole run:           {:.0} ms",
        log.max_gap_ms()
    );
    match (&log.error, log.check_sequence()) {
        (None, Ok(())) => println!(
            "  INCR client: {} replies, 1..{} with no gap and no repeat, one TCP connection throughout",
            log.samples.len(),
            log.samples.len()
        ),
        (e, s) => println!("  INCR client: FAILED: {e:?} {s:?}"),
    }
    match &bench {
        Ok(runs) => println!("  redis-benchmark: {runs} runs, no errors"),
        Err(e) => println!("  redis-benchmark: FAILED: {e}"),
    }
    if let Ok(s) = c.arbiter.status() {
        println!("  arbiter flags:\n{}", s.trim_end().replace('\n', "\n    "));
    }
    let svg = integration::repo_path("build/failover-latency.svg");
    let samples: Vec<(f64, f64)> = log.samples.iter().map(|s| (s.at_s, s.latency_ms)).collect();
    let events = [
        Event::new(killed, "host-a powered off"),
        Event::new(live, format!("{} live", HOSTS[c.primary])),
        Event::new(reprotect_start, "new backup starts"),
        Event::new(reprotected, "re-protected"),
    ];
    match latency_svg(
        &svg,
        "INCR latency through a failover (kv guest, FT pair)",
        &samples,
        &events,
    ) {
        Ok(()) => println!("  latency picture: {}", svg.display()),
        Err(e) => println!("  latency picture: {e}"),
    }

    let interactive = std::io::stdin().is_terminal();
    let limit = std::env::var("DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if interactive { 3600 } else { 0 });
    if limit > 0 {
        println!(
            "\nThe pair is still up: ip netns exec {} redis-cli -h {GUEST_IP} incr hits",
            c.lab.topo.ns("client")
        );
        println!("Logs are in {}", c.lab.dir.path().display());
    }
    if interactive && limit > 0 {
        println!("Press Enter (or Ctrl-C) to stop and tear everything down.");
        std::thread::spawn(|| {
            let _ = std::io::stdin().lock().lines().next();
            STOP.store(true, Ordering::SeqCst);
        });
    }
    let until = Instant::now() + Duration::from_secs(limit);
    while !STOP.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ok = log.error.is_none() && log.check_sequence().is_ok() && bench.is_ok();
    drop(c);
    step(t0, "stopped; namespaces and processes removed");
    if !ok {
        std::process::exit(1);
    }
}

/// Prints what `ftctl ARGS` says about `host`'s vmm, indented, as an operator would see it.
fn show_ftctl(host: &integration::stack::Host, args: &[&str], name: &str) {
    println!("  $ ftctl --api-sock {name}-api.sock {}", args.join(" "));
    match host.ftctl(args) {
        Ok((true, out, _)) => {
            for l in out.lines() {
                println!("    {l}");
            }
        }
        Ok((false, _, err)) => println!("    {}", err.trim_end()),
        Err(e) => println!("    cannot run ftctl: {e}"),
    }
}
