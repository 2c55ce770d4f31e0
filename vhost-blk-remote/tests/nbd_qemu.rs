//! The NBD client against a real qemu-nbd.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use vhost_blk_remote::nbd::{Client, ClientOptions, Command, NbdError, NbdUri};

const SIZE: usize = 4 << 20;

/// A fresh image of SIZE bytes served writable by qemu-nbd as export `disk` on a Unix socket.
/// Fields drop in order: the server dies before its directory goes.
struct Served {
    _srv: Proc,
    img: std::path::PathBuf,
    sock: std::path::PathBuf,
    _dir: TempDir,
}

impl Served {
    fn new(tag: &str) -> Self {
        let t = TempDir::new(tag);
        let img = t.path("disk.img");
        make_image(&img, SIZE);
        let sock = t.path("nbd.sock");
        let srv = qemu_nbd(
            &img,
            "disk",
            Listen::Unix(&sock),
            false,
            &t.path("qemu.log"),
        );
        Served {
            _srv: srv,
            img,
            sock,
            _dir: t,
        }
    }
}

fn connect(uri: &str) -> Client {
    Client::connect(&NbdUri::parse(uri).unwrap(), ClientOptions::default()).expect("connect")
}

#[test]
fn handshake_reports_export() {
    let d = Served::new("hs");
    let c = connect(&unix_uri("disk", &d.sock));
    let info = c.info();
    assert_eq!(info.size, SIZE as u64);
    assert!(!info.read_only());
    assert!(info.can_flush(), "qemu-nbd offers flush");
    assert!(info.max_payload >= 1 << 20);
    assert!(info.min_block.is_power_of_two());
    assert!(c.is_connected());
}

#[test]
fn unknown_export_is_refused() {
    let d = Served::new("noexp");
    let r = Client::connect(
        &NbdUri::parse(&unix_uri("nope", &d.sock)).unwrap(),
        ClientOptions::default(),
    );
    match r {
        Err(e @ NbdError::OptionRejected { .. }) => assert!(!e.is_transient()),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connecting to a missing export must fail"),
    }
}

#[test]
fn read_write_flush_round_trip_unix_and_tcp() {
    let t = TempDir::new("rw");
    let img = t.path("disk.img");
    make_image(&img, SIZE);
    let sock = t.path("nbd.sock");
    let port = free_port();
    let _a = qemu_nbd(&img, "disk", Listen::Unix(&sock), false, &t.path("a.log"));
    let c = connect(&unix_uri("disk", &sock));

    let original = c.read_at(8192, 4096).unwrap();
    assert_bytes(&original, &read_file_at(&img, 8192, 4096), "data");
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    c.write_at(1 << 20, &data).unwrap();
    c.flush().unwrap();
    assert_bytes(&c.read_at(1 << 20, data.len()).unwrap(), &data, "data");
    assert_bytes(
        &read_file_at(&img, 1 << 20, data.len()),
        &data,
        "data reached the file",
    );
    drop(c);
    drop(_a);

    let _b = qemu_nbd(&img, "disk", Listen::Tcp(port), false, &t.path("b.log"));
    let c = connect(&format!("nbd://127.0.0.1:{port}/disk"));
    assert_bytes(&c.read_at(1 << 20, data.len()).unwrap(), &data, "data");
    c.write_at(0, &[0xee; 512]).unwrap();
    c.flush().unwrap();
    assert_bytes(&read_file_at(&img, 0, 512), &vec![0xee; 512], "data");
}

#[test]
fn out_of_range_is_refused_locally() {
    let d = Served::new("oor");
    let c = connect(&unix_uri("disk", &d.sock));
    assert!(matches!(
        c.read_at(SIZE as u64 - 512, 1024),
        Err(NbdError::OutOfRange { .. })
    ));
    // The connection is still fine afterwards.
    assert_bytes(
        &c.read_at(0, 512).unwrap(),
        &read_file_at(&d.img, 0, 512),
        "data",
    );
}

#[test]
fn many_requests_in_flight() {
    let d = Served::new("many");
    let c = connect(&unix_uri("disk", &d.sock));
    const N: u64 = 64;
    let (tx, rx) = mpsc::channel();
    for i in 0..N {
        let tx = tx.clone();
        let data = vec![i as u8 + 1; 16384];
        c.submit(
            Command::Write {
                offset: i * 16384,
                data,
            },
            Box::new(move |r| tx.send((i, r)).unwrap()),
        );
    }
    for _ in 0..N {
        let (i, r) = rx.recv_timeout(Duration::from_secs(20)).expect("reply");
        r.unwrap_or_else(|e| panic!("write {i}: {e}"));
    }
    for i in 0..N {
        let tx = tx.clone();
        c.submit(
            Command::Read {
                offset: i * 16384,
                len: 16384,
            },
            Box::new(move |r| tx.send((i, r)).unwrap()),
        );
    }
    for _ in 0..N {
        let (i, r) = rx.recv_timeout(Duration::from_secs(20)).expect("reply");
        assert_bytes(&r.unwrap(), &[i as u8 + 1; 16384], &format!("read {i}"));
    }
    assert!(
        c.max_inflight_seen() > 1,
        "requests were not pipelined (max in flight {})",
        c.max_inflight_seen()
    );
}

#[test]
fn read_only_export_rejects_writes() {
    let t = TempDir::new("ro");
    let img = t.path("disk.img");
    make_image(&img, SIZE);
    let sock = t.path("nbd.sock");
    let _srv = qemu_nbd(&img, "disk", Listen::Unix(&sock), true, &t.path("qemu.log"));
    let c = connect(&unix_uri("disk", &sock));
    assert!(c.info().read_only());
    assert!(matches!(c.write_at(0, &[1; 512]), Err(NbdError::ReadOnly)));
    assert!(matches!(
        c.trim(0, 512),
        Err(NbdError::ReadOnly | NbdError::Unsupported(_))
    ));
    assert_bytes(
        &c.read_at(0, 512).unwrap(),
        &read_file_at(&img, 0, 512),
        "data",
    );
    assert_eq!(read_file_at(&img, 0, 512), {
        let mut v = vec![0u8; 512];
        v.iter_mut().for_each(|b| *b = 0x5a);
        v
    });
}

/// Kill qemu-nbd in the middle of a write loop (with requests in flight), restart it on the
/// same image, and check that every acknowledged write is in the file.
#[test]
fn reconnects_and_loses_no_acknowledged_write() {
    let t = TempDir::new("reconn");
    let img = t.path("disk.img");
    make_image(&img, SIZE);
    let sock = t.path("nbd.sock");
    let log = t.path("qemu.log");
    let mut srv = qemu_nbd(&img, "disk", Listen::Unix(&sock), false, &log);
    let opts = ClientOptions {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    };
    let c =
        Arc::new(Client::connect(&NbdUri::parse(&unix_uri("disk", &sock)).unwrap(), opts).unwrap());

    const BLOCKS: u64 = 600;
    const WINDOW: usize = 8;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (c, acked) = (c.clone(), acked.clone());
        std::thread::spawn(move || {
            let (tx, rx) = mpsc::channel();
            let mut outstanding = 0;
            for b in 0..BLOCKS {
                if outstanding == WINDOW {
                    let (blk, r): (u64, Result<Vec<u8>, NbdError>) = rx.recv().unwrap();
                    r.unwrap_or_else(|e| panic!("write {blk} failed: {e}"));
                    acked.lock().unwrap().push(blk);
                    outstanding -= 1;
                }
                let tx = tx.clone();
                let data = vec![(b % 250) as u8 + 1; 4096];
                c.submit(
                    Command::Write {
                        offset: b * 4096,
                        data,
                    },
                    Box::new(move |r| {
                        let _ = tx.send((b, r));
                    }),
                );
                outstanding += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            for _ in 0..outstanding {
                let (blk, r) = rx.recv().unwrap();
                r.unwrap_or_else(|e| panic!("write {blk} failed: {e}"));
                acked.lock().unwrap().push(blk);
            }
        })
    };
    // Let some writes through, then kill the server with requests in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 100 {
        assert!(Instant::now() < deadline, "writes do not progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    srv.kill();
    let at_kill = acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(400));
    assert!(!c.is_connected(), "client noticed the server went away");
    let stalled = acked.lock().unwrap().len();
    assert!(
        stalled < BLOCKS as usize,
        "the loop must be stalled while the server is down"
    );
    let _srv2 = qemu_nbd(
        &img,
        "disk",
        Listen::Unix(&sock),
        false,
        &t.path("qemu2.log"),
    );
    writer.join().expect("writer thread");
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), BLOCKS as usize);
    assert!(c.reconnect_count() >= 1);
    assert!(at_kill < BLOCKS as usize);
    c.flush().unwrap();
    for b in acked {
        let got = read_file_at(&img, b * 4096, 4096);
        assert_bytes(
            &got,
            &[(b % 250) as u8 + 1; 4096],
            &format!("block {b} lost"),
        );
    }
}

#[test]
fn trim_punches_a_hole() {
    let t = TempDir::new("trim");
    let img = t.path("disk.img");
    make_image(&img, SIZE);
    let sock = t.path("nbd.sock");
    let _srv = qemu_nbd_with(
        &img,
        "disk",
        Listen::Unix(&sock),
        false,
        &["--discard=unmap"],
        &t.path("qemu.log"),
    );
    let c = connect(&unix_uri("disk", &sock));
    assert!(c.info().can_trim());
    c.write_at(131072, &[0x77; 8192]).unwrap();
    c.trim(131072, 8192).unwrap();
    assert_bytes(
        &c.read_at(131072, 8192).unwrap(),
        &[0u8; 8192],
        "trimmed range",
    );
}
