//! `make bench` part 2: the whole stack (client namespace -> TAP -> vhost-net-ft -> vmm ->
//! kv guest -> vhost-blk-remote -> NBD in the storage namespace). Writes markdown rows to
//! the file named by the first argument.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use integration::resp::Reply;
use integration::stack::{BlockBackend, Host, Lab, NbdServer, Storage};
use integration::topology::GUEST_IP;

const REQUESTS: &str = "20000";
const CLIENTS: &str = "16";

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[((p * sorted.len()).div_ceil(100)).max(1) - 1]
}

/// One client, one request at a time: latency of each, sorted.
fn sequential(lab: &Lab, cmd: &[&[u8]], n: usize) -> Vec<Duration> {
    let mut c = lab.connect().expect("connect");
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let reply = c.cmd(cmd).expect("request");
            assert!(!matches!(reply, Reply::Error(_)), "{reply:?}");
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: bench_kv OUTPUT.md");
    let lab = Lab::new(&["host-a"]).expect("topology");
    let disk = lab.create_disk("disk.img").expect("disk");
    let _storage = Storage::start(&lab, NbdServer::QemuNbd, &disk).expect("qemu-nbd");
    let _host = Host::start(&lab, "host-a", BlockBackend::Remote(Storage::uri())).expect("host-a");

    let args = ["-t", "set,get,incr", "-n", REQUESTS, "-c", CLIENTS];
    let rows = lab.redis_benchmark(&args);
    let command = format!("redis-benchmark -h {GUEST_IP} {}", args.join(" "));
    let mut md = String::new();
    md.push_str("## Key-value service through the whole stack\n\n");
    md.push_str("Client namespace -> bridge -> TAP -> vhost-net-ft -> vmm (kv guest, smoltcp) -> vhost-blk-remote ->\n");
    md.push_str(
        "qemu-nbd in the storage namespace. Every SET and INCR is written to the disk log and\n",
    );
    md.push_str("flushed before the reply. Numbers on this emulating KVM, not hardware KVM.\n\n");
    md.push_str("| test | requests/s | p50 latency | p99 latency | command |\n| --- | --- | --- | --- | --- |\n");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.3} ms | {:.3} ms | `{command}` |",
            r.test, r.rps, r.p50_ms, r.p99_ms
        );
    }

    let n = 2000;
    let get = sequential(&lab, &[b"GET", b"bench:key"], n);
    let set = sequential(&lab, &[b"SET", b"bench:key", b"value"], n);
    let (g50, g99, s50, s99) = (
        percentile(&get, 50),
        percentile(&get, 99),
        percentile(&set, 50),
        percentile(&set, 99),
    );
    md.push_str("\n| one client, one request at a time | p50 | p99 |\n| --- | --- | --- |\n");
    let _ = writeln!(md, "| GET (no disk I/O) | {g50:.2?} | {g99:.2?} |");
    let _ = writeln!(
        md,
        "| SET (disk write + flush before the reply) | {s50:.2?} | {s99:.2?} |"
    );
    let _ = writeln!(
        md,
        "| guest-visible disk write + flush (SET - GET) | {:.2?} | - |",
        s50.saturating_sub(g50)
    );
    let _ = writeln!(md, "\nCommand: `cargo run --release -p integration --bin bench_kv` ({n} sequential requests each).");
    std::fs::write(&out, &md).expect("write output");
    print!("{md}");
}
