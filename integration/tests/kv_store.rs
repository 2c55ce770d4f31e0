//! End to end: the `kv` guest behind vhost-net-ft and vhost-blk-remote, its disk on an NBD
//! server in another namespace, used with stock redis-cli and redis-benchmark from the client
//! namespace.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use integration::resp::Reply;
use integration::stack::{BlockBackend, Host, Lab, NbdServer, Storage};
use integration::topology::GUEST_IP;

fn lab_with_guest(server: NbdServer) -> (Lab, Storage, Host) {
    let lab = Lab::new(&["host-a"]).expect("topology");
    let disk = lab.create_disk("disk.img").expect("disk");
    let storage = Storage::start(&lab, server, &disk).expect("NBD server");
    let host = Host::start(&lab, "host-a", BlockBackend::Remote(Storage::uri())).expect("host-a");
    (lab, storage, host)
}

#[test]
fn redis_cli_ping_set_get_incr() {
    let (lab, _storage, _host) = lab_with_guest(NbdServer::QemuNbd);
    assert_eq!(lab.redis_cli(&["ping"]).expect("ping"), "PONG");
    assert_eq!(
        lab.redis_cli(&["set", "greeting", "hello world"])
            .expect("set"),
        "OK"
    );
    assert_eq!(
        lab.redis_cli(&["get", "greeting"]).expect("get"),
        "hello world"
    );
    assert_eq!(lab.redis_cli(&["get", "missing"]).expect("get missing"), "");
    for expected in 1..=5 {
        assert_eq!(
            lab.redis_cli(&["incr", "counter"]).expect("incr"),
            expected.to_string()
        );
    }
    assert_eq!(
        lab.redis_cli(&["incrby", "counter", "10"]).expect("incrby"),
        "15"
    );
    assert_eq!(
        lab.redis_cli(&["exists", "greeting", "counter", "nope"])
            .expect("exists"),
        "2"
    );
    assert_eq!(lab.redis_cli(&["dbsize"]).expect("dbsize"), "2");
    assert_eq!(lab.redis_cli(&["del", "greeting"]).expect("del"), "1");
    let err = lab
        .redis_cli(&["incr", "counter", "extra"])
        .expect("wrong arity");
    assert!(err.contains("wrong number of arguments"), "{err}");
}

#[test]
fn redis_benchmark_runs_without_errors() {
    let (lab, _storage, _host) = lab_with_guest(NbdServer::QemuNbd);
    let out = lab
        .client_cmd(&[
            "redis-benchmark",
            "-h",
            GUEST_IP,
            "-t",
            "set,get,incr",
            "-n",
            "2000",
            "-c",
            "8",
            "-q",
        ])
        .expect("redis-benchmark");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "redis-benchmark failed:\n{text}");
    for test in ["SET", "GET", "INCR"] {
        assert!(
            text.contains(&format!("{test}: ")),
            "no {test} result in:\n{text}"
        );
    }
    assert!(
        !text.to_lowercase().contains("error"),
        "errors reported:\n{text}"
    );
    // Every INCR of the benchmark was acknowledged, so the counter key holds exactly -n.
    let mut c = lab.connect().expect("connect");
    assert_eq!(
        c.cmd(&[b"GET", b"counter:__rand_int__"]).expect("get"),
        Reply::Bulk(Some(b"2000".to_vec()))
    );
}

#[test]
fn acknowledged_keys_survive_a_vmm_restart() {
    let (lab, _storage, mut host) = lab_with_guest(NbdServer::QemuNbd);
    let mut c = lab.connect().expect("connect");
    for i in 0..50 {
        let key = format!("key{i}");
        let reply = c
            .cmd(&[b"SET", key.as_bytes(), format!("value{i}").as_bytes()])
            .expect("set");
        assert_eq!(reply, Reply::Status("OK".into()));
    }
    for _ in 0..7 {
        c.cmd(&[b"INCR", b"n"]).expect("incr");
    }
    drop(c);
    host.restart_vmm().expect("restart vmm");
    let mut c = lab.connect().expect("connect after restart");
    for i in 0..50 {
        let key = format!("key{i}");
        assert_eq!(
            c.cmd(&[b"GET", key.as_bytes()]).expect("get"),
            Reply::Bulk(Some(format!("value{i}").into_bytes()))
        );
    }
    assert_eq!(
        c.cmd(&[b"GET", b"n"]).expect("get n"),
        Reply::Bulk(Some(b"7".to_vec()))
    );
}

/// Writes `count` keys in a loop on one connection; once 20 writes are acknowledged,
/// `disrupt` runs on another thread while the loop keeps writing, so that writes are in
/// flight when it strikes. Returns the acknowledged (key, value) pairs, and panics unless
/// writes were still being made after the disruption ended.
fn write_during<F: FnOnce() + Send>(lab: &Lab, count: usize, disrupt: F) -> Vec<(String, String)> {
    let progress = AtomicUsize::new(0);
    let (during, after) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let acked = std::thread::scope(|scope| {
        let disruptor = scope.spawn(|| {
            while progress.load(Ordering::SeqCst) < 20 {
                std::thread::sleep(Duration::from_millis(2));
            }
            during.store(progress.load(Ordering::SeqCst), Ordering::SeqCst);
            disrupt();
            after.store(progress.load(Ordering::SeqCst), Ordering::SeqCst);
        });
        let mut c = lab.connect().expect("connect");
        let mut acked = Vec::new();
        for i in 0..count {
            let (k, v) = (format!("w{i}"), format!("v{i}"));
            match c.cmd(&[b"SET", k.as_bytes(), v.as_bytes()]) {
                Ok(Reply::Status(s)) if s == "OK" => acked.push((k, v)),
                other => panic!("write {i} failed: {other:?}"),
            }
            progress.store(i + 1, Ordering::SeqCst);
        }
        disruptor.join().expect("disruptor thread");
        acked
    });
    let (during, after) = (during.load(Ordering::SeqCst), after.load(Ordering::SeqCst));
    eprintln!("disruption began after write {during} and ended after write {after} of {count}");
    assert!(
        after < count,
        "the disruption ended after the last write; make the loop longer"
    );
    acked
}

fn check_all(lab: &Lab, acked: &[(String, String)]) {
    let mut c = lab.connect().expect("connect");
    for (k, v) in acked {
        assert_eq!(
            c.cmd(&[b"GET", k.as_bytes()]).expect("get"),
            Reply::Bulk(Some(v.clone().into_bytes())),
            "acknowledged write of {k} lost"
        );
    }
}

#[test]
fn blk_backend_restart_loses_no_acknowledged_write() {
    let (lab, _storage, mut host) = lab_with_guest(NbdServer::QemuNbd);
    let acked = write_during(&lab, 300, || {
        host.restart_blk(Duration::from_millis(300))
            .expect("restart blk")
    });
    assert_eq!(acked.len(), 300);
    let vmm_log = host.vmm.output();
    assert!(
        vmm_log.contains("reconnected"),
        "the vmm never reconnected:\n{vmm_log}"
    );
    // Also after a reboot: the data is on the NBD disk, not only in the guest's memory.
    host.restart_vmm().expect("restart vmm");
    check_all(&lab, &acked);
}

#[test]
fn nbd_server_restart_loses_no_acknowledged_write() {
    let (lab, mut storage, mut host) = lab_with_guest(NbdServer::QemuNbd);
    let acked = write_during(&lab, 300, || {
        storage
            .restart(Duration::from_millis(500))
            .expect("restart qemu-nbd")
    });
    assert_eq!(acked.len(), 300);
    host.restart_vmm().expect("restart vmm");
    check_all(&lab, &acked);
}

#[test]
fn works_with_nbdkit_as_the_storage_server() {
    let (lab, _storage, mut host) = lab_with_guest(NbdServer::Nbdkit);
    let acked = write_during(&lab, 60, || {});
    host.restart_vmm().expect("restart vmm");
    check_all(&lab, &acked);
}

#[test]
fn qemu_storage_daemon_serves_the_guest_disk() {
    let lab = Lab::new(&["host-a"]).expect("topology");
    let disk = lab.create_disk("qsd.img").expect("disk");
    let mut host = Host::start(&lab, "host-a", BlockBackend::QemuStorageDaemon(disk))
        .expect("host-a with qemu-storage-daemon");
    let acked = write_during(&lab, 60, || {});
    host.restart_vmm().expect("restart vmm");
    check_all(&lab, &acked);
}

#[test]
fn net_backend_restart_keeps_the_tcp_connection() {
    let (lab, _storage, mut host) = lab_with_guest(NbdServer::QemuNbd);
    let mut c = lab.connect().expect("connect");
    for expected in 1..=10 {
        assert_eq!(c.cmd(&[b"INCR", b"n"]).expect("incr"), Reply::Int(expected));
    }
    host.restart_net(Duration::from_millis(300))
        .expect("restart vhost-net-ft");
    // Same connection: TCP retransmits across the outage; every reply is the next number.
    for expected in 11..=20 {
        assert_eq!(
            c.cmd(&[b"INCR", b"n"]).expect("incr after restart"),
            Reply::Int(expected)
        );
    }
    assert_eq!(lab.redis_cli(&["get", "n"]).expect("new connection"), "20");
    let vmm_log = host.vmm.output();
    assert!(
        vmm_log.contains("reconnected"),
        "the vmm never reconnected:\n{vmm_log}"
    );
}
