//! `make demo`: storage, backends and the VMM with the `kv` guest in network namespaces, a
//! short client workload, then the guest stays up for the user until Enter or Ctrl-C
//! (or for `DEMO_SECONDS` seconds when stdin is not a terminal). Everything is torn down at
//! the end.

use std::io::{BufRead, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use integration::resp::Reply;
use integration::stack::{BlockBackend, Host, Lab, NbdServer, Storage};
use integration::topology::GUEST_IP;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn step(t0: Instant, what: &str) {
    println!("[{:>7.3} s] {what}", t0.elapsed().as_secs_f64());
}

fn main() {
    // SAFETY: installs a handler that only stores to an atomic (async-signal-safe), so that
    // Ctrl-C still runs the teardown below.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let t0 = Instant::now();
    let lab = Lab::new(&["host-a"]).expect("topology");
    step(t0, &format!("network namespaces up: {}", lab.topo.ns("*")));
    let disk = lab.create_disk("disk.img").expect("disk");
    let _storage = Storage::start(&lab, NbdServer::QemuNbd, &disk).expect("qemu-nbd");
    step(
        t0,
        &format!(
            "storage: qemu-nbd serving {} in {}",
            Storage::uri(),
            lab.topo.ns("storage")
        ),
    );
    let host = Host::start(&lab, "host-a", BlockBackend::Remote(Storage::uri())).expect("host-a");
    step(t0, &format!("host-a: vhost-net-ft, vhost-blk-remote and vmm running; guest: kv ready at {GUEST_IP}:6379"));

    let mut c = lab.connect().expect("connect");
    let start = Instant::now();
    let mut last = 0;
    for _ in 0..200 {
        match c.cmd(&[b"INCR", b"demo:counter"]) {
            Ok(Reply::Int(n)) => last = n,
            other => panic!("INCR failed: {other:?}"),
        }
    }
    let per_op = start.elapsed() / 200;
    step(
        t0,
        &format!("client: 200 durable INCRs, counter={last}, {per_op:?} per acknowledged write"),
    );
    println!(
        "{}",
        lab.redis_cli(&["info"])
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("kv_"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    println!("\nReach the guest from the client namespace, e.g.:");
    println!(
        "  ip netns exec {} redis-cli -h {GUEST_IP} incr hits",
        lab.topo.ns("client")
    );
    println!("Logs and sockets are in {}", lab.dir.path().display());
    let interactive = std::io::stdin().is_terminal();
    let limit = std::env::var("DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if interactive { 3600 } else { 0 });
    if interactive {
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
    drop(host);
    step(t0, "stopped; namespaces and processes removed");
}
