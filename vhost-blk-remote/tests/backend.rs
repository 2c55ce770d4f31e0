//! The vhost-blk-remote binary, driven through vhost-harness, on top of qemu-nbd.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use vhost_harness::{Desc, Harness, HarnessConfig, UsedElem, F_VERSION_1};
use vm_memory::GuestAddress;

const SIZE: usize = 4 << 20;
const T: Duration = Duration::from_secs(15);

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_SEG_MAX: u64 = 1 << 2;

/// qemu-nbd + backend in a temp dir.
/// Fields drop in order: processes are killed before the directory is removed.
struct Setup {
    img: PathBuf,
    vsock: PathBuf,
    nsock: PathBuf,
    qemu: Option<Proc>,
    backend: Proc,
    t: TempDir,
}

fn setup(tag: &str, backend_args: &[&str]) -> Setup {
    setup_with(tag, backend_args, &[])
}

fn setup_with(tag: &str, backend_args: &[&str], qemu_args: &[&str]) -> Setup {
    let t = TempDir::new(tag);
    let img = t.path("disk.img");
    make_image(&img, SIZE);
    let nsock = t.path("nbd.sock");
    let vsock = t.path("vhost.sock");
    let qemu = qemu_nbd_with(
        &img,
        "disk",
        Listen::Unix(&nsock),
        false,
        qemu_args,
        &t.path("qemu.log"),
    );
    let backend = backend(
        &vsock,
        &unix_uri("disk", &nsock),
        backend_args,
        &t.path("backend.log"),
    );
    Setup {
        t,
        img,
        vsock,
        nsock,
        qemu: Some(qemu),
        backend,
    }
}

fn harness(s: &Setup) -> Harness {
    Harness::connect(&s.vsock, HarnessConfig::default()).expect("harness connects")
}

/// Where a request's buffers are.
struct Req {
    head: u16,
    data: GuestAddress,
    status: GuestAddress,
}

fn header(h: &mut Harness, rtype: u32, sector: u64) -> GuestAddress {
    let a = h.alloc(16, 16).unwrap();
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&rtype.to_le_bytes());
    b[8..16].copy_from_slice(&sector.to_le_bytes());
    h.write(a, &b).unwrap();
    a
}

/// Publishes a well-formed request: header, `out` data, `in_len` writable bytes, status.
fn publish(h: &mut Harness, rtype: u32, sector: u64, out: &[u8], in_len: u32) -> Req {
    let hdr = header(h, rtype, sector);
    let status = h.alloc(1, 1).unwrap();
    h.write(status, &[0xff]).unwrap();
    let mut descs = vec![Desc::readable(hdr, 16)];
    let mut data = GuestAddress(0);
    if !out.is_empty() {
        data = h.alloc(out.len() as u64, 512).unwrap();
        h.write(data, out).unwrap();
        descs.push(Desc::readable(data, out.len() as u32));
    }
    if in_len > 0 {
        data = h.alloc(u64::from(in_len), 512).unwrap();
        descs.push(Desc::writable(data, in_len));
    }
    descs.push(Desc::writable(status, 1));
    let head = h.add_chain(0, &descs).unwrap();
    Req { head, data, status }
}

fn status(h: &Harness, r: &Req) -> u8 {
    h.read(r.status, 1).unwrap()[0]
}

fn run(h: &mut Harness, rtype: u32, sector: u64, out: &[u8], in_len: u32) -> (Req, UsedElem) {
    let r = publish(h, rtype, sector, out, in_len);
    h.kick(0).unwrap();
    let u = h.wait_used(0, 1, T).expect("completion");
    assert_eq!(u[0].id, u32::from(r.head));
    (r, u[0])
}

#[test]
fn features_config_and_get_id() {
    let s = setup("id", &[]);
    let mut h = harness(&s);
    let f = h.offered_features();
    for (bit, name) in [
        (F_VERSION_1, "VERSION_1"),
        (F_FLUSH, "FLUSH"),
        (F_BLK_SIZE, "BLK_SIZE"),
        (F_SEG_MAX, "SEG_MAX"),
    ] {
        assert_ne!(f & bit, 0, "{name} offered");
    }
    assert_eq!(f & F_RO, 0);
    let cfg = h.get_config(0, 24).unwrap();
    assert_eq!(
        u64::from_le_bytes(cfg[0..8].try_into().unwrap()),
        SIZE as u64 / 512
    );
    assert_eq!(u32::from_le_bytes(cfg[20..24].try_into().unwrap()), 512);

    let (r, u) = run(&mut h, T_GET_ID, 0, &[], 20);
    assert_eq!(status(&h, &r), S_OK);
    assert_eq!(u.len, 21);
    let mut want = b"disk".to_vec();
    want.resize(20, 0);
    assert_bytes(&h.read(r.data, 20).unwrap(), &want, "data");
}

#[test]
fn write_read_flush_round_trip() {
    let s = setup("rw", &[]);
    let mut h = harness(&s);
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 241) as u8).collect();
    let (r, u) = run(&mut h, T_OUT, 16, &data, 0);
    assert_eq!((status(&h, &r), u.len), (S_OK, 1));
    let (r, _) = run(&mut h, T_FLUSH, 0, &[], 0);
    assert_eq!(status(&h, &r), S_OK);
    assert_bytes(
        &read_file_at(&s.img, 16 * 512, data.len()),
        &data,
        "on disk",
    );

    // Read it back with the header and the data split over several descriptors.
    let hdr = header(&mut h, T_IN, 16);
    let buf = h.alloc(8192, 512).unwrap();
    let st = h.alloc(1, 1).unwrap();
    let descs = [
        Desc::readable(hdr, 5),
        Desc::readable(GuestAddress(hdr.0 + 5), 11),
        Desc::writable(buf, 1000),
        Desc::writable(GuestAddress(buf.0 + 1000), 7192),
        Desc::writable(st, 1),
    ];
    let used = h.submit(0, &descs, T).unwrap();
    assert_eq!(h.read(st, 1).unwrap()[0], S_OK);
    assert_eq!(used.len, 8193);
    assert_bytes(&h.read(buf, 8192).unwrap(), &data, "data");

    // Data and status in one descriptor.
    let hdr = header(&mut h, T_IN, 0);
    let both = h.alloc(513, 512).unwrap();
    let used = h
        .submit(0, &[Desc::readable(hdr, 16), Desc::writable(both, 513)], T)
        .unwrap();
    assert_eq!(used.len, 513);
    let got = h.read(both, 513).unwrap();
    assert_eq!(got[512], S_OK);
    assert_bytes(&got[..512], &read_file_at(&s.img, 0, 512)[..], "data");
}

#[test]
fn works_without_event_idx() {
    let s = setup("noevidx", &[]);
    let cfg = HarnessConfig {
        feature_mask: !vhost_harness::F_EVENT_IDX,
        ..Default::default()
    };
    let mut h = Harness::connect(&s.vsock, cfg).unwrap();
    assert_eq!(h.acked_features() & vhost_harness::F_EVENT_IDX, 0);
    for i in 0..8u64 {
        let (r, _) = run(&mut h, T_OUT, i, &[i as u8; 512], 0);
        assert_eq!(status(&h, &r), S_OK);
        // Every completion is signalled on the call eventfd.
        let (r, _) = run(&mut h, T_IN, i, &[], 512);
        assert_eq!(status(&h, &r), S_OK);
        assert_bytes(&h.read(r.data, 512).unwrap(), &[i as u8; 512], "read back");
    }
    let r = publish(&mut h, T_GET_ID, 0, &[], 20);
    h.kick(0).unwrap();
    assert!(h.wait_call(0, T).unwrap(), "call eventfd signalled");
    assert_eq!(h.pop_used(0).unwrap()[0].id, u32::from(r.head));
}

#[test]
fn discard_uses_nbd_trim() {
    // qemu-nbd ignores trims unless told to unmap.
    let s = setup_with("discard", &[], &["--discard=unmap"]);
    let mut h = harness(&s);
    assert_ne!(
        h.offered_features() & (1 << 13),
        0,
        "VIRTIO_BLK_F_DISCARD offered"
    );
    let cfg = h.get_config(36, 12).unwrap();
    assert!(
        u32::from_le_bytes(cfg[0..4].try_into().unwrap()) > 0,
        "max_discard_sectors"
    );
    let seg = |sector: u64, n: u32, flags: u32| {
        let mut b = Vec::new();
        b.extend_from_slice(&sector.to_le_bytes());
        b.extend_from_slice(&n.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
        b
    };
    let (r, _) = run(&mut h, T_OUT, 256, &[0x77; 8192], 0);
    assert_eq!(status(&h, &r), S_OK);
    let (r, _) = run(&mut h, 11, 0, &seg(256, 16, 0), 0);
    assert_eq!(status(&h, &r), S_OK);
    let (r, _) = run(&mut h, T_IN, 256, &[], 8192);
    assert_eq!(status(&h, &r), S_OK);
    assert_bytes(
        &h.read(r.data, 8192).unwrap(),
        &[0u8; 8192],
        "discarded range reads zero",
    );
    let (r, _) = run(&mut h, 11, 0, &seg(256, 16, 1), 0);
    assert_eq!(status(&h, &r), S_UNSUPP, "unmap flag on discard");
    let (r, _) = run(&mut h, 11, 0, &seg((SIZE / 512) as u64, 16, 0), 0);
    assert_eq!(status(&h, &r), S_IOERR, "discard past the end");
}

/// A request described by an indirect descriptor table (VIRTIO_RING_F_INDIRECT_DESC).
#[test]
fn indirect_descriptors() {
    use vhost_harness::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
    let s = setup("indirect", &[]);
    let mut h = harness(&s);
    assert_ne!(
        h.acked_features() & (1 << 28),
        0,
        "INDIRECT_DESC negotiated"
    );
    let hdr = header(&mut h, T_IN, 3);
    let buf = h.alloc(512, 512).unwrap();
    let st = h.alloc(1, 1).unwrap();
    let table = h.alloc(48, 16).unwrap();
    let mut t = Vec::new();
    for (addr, len, flags, next) in [
        (hdr.0, 16u32, DESC_F_NEXT, 1u16),
        (buf.0, 512, DESC_F_WRITE | DESC_F_NEXT, 2),
        (st.0, 1, DESC_F_WRITE, 0),
    ] {
        t.extend_from_slice(&addr.to_le_bytes());
        t.extend_from_slice(&len.to_le_bytes());
        t.extend_from_slice(&flags.to_le_bytes());
        t.extend_from_slice(&next.to_le_bytes());
    }
    h.write(table, &t).unwrap();
    h.write_desc(0, 255, table.0, 48, DESC_F_INDIRECT, 0)
        .unwrap();
    h.publish(0, 255).unwrap();
    h.kick(0).unwrap();
    let u = h.wait_used(0, 1, T).unwrap();
    assert_eq!((u[0].id, u[0].len), (255, 513));
    assert_eq!(h.read(st, 1).unwrap()[0], S_OK);
    assert_bytes(
        &h.read(buf, 512).unwrap(),
        &read_file_at(&s.img, 3 * 512, 512),
        "data",
    );
}

#[test]
fn bad_requests_fail_and_backend_keeps_serving() {
    let s = setup("bad", &[]);
    let mut h = harness(&s);
    let outside = GuestAddress(HarnessConfig::default().mem_size + 0x1000);

    // Data buffer outside guest memory -> IOERR.
    let hdr = header(&mut h, T_IN, 0);
    let st = h.alloc(1, 1).unwrap();
    let u = h
        .submit(
            0,
            &[
                Desc::readable(hdr, 16),
                Desc::writable(outside, 512),
                Desc::writable(st, 1),
            ],
            T,
        )
        .unwrap();
    assert_eq!((h.read(st, 1).unwrap()[0], u.len), (S_IOERR, 1));

    // Header outside guest memory -> IOERR.
    let u = h
        .submit(0, &[Desc::readable(outside, 16), Desc::writable(st, 1)], T)
        .unwrap();
    assert_eq!((h.read(st, 1).unwrap()[0], u.len), (S_IOERR, 1));

    // Device-readable descriptor after a writable one -> IOERR.
    let hdr = header(&mut h, T_OUT, 0);
    let buf = h.alloc(512, 512).unwrap();
    let st2 = h.alloc(1, 1).unwrap();
    h.write(st2, &[0xff]).unwrap();
    let u = h.submit(
        0,
        &[
            Desc::readable(hdr, 16),
            Desc::writable(st2, 1),
            Desc::readable(buf, 512),
        ],
        T,
    );
    let _ = u.unwrap();
    assert_eq!(h.read(st2, 1).unwrap()[0], S_IOERR);
    assert_ne!(read_file_at(&s.img, 0, 1), vec![0u8], "nothing written");

    // Header too short -> IOERR.
    let hdr = header(&mut h, T_IN, 0);
    let u = h
        .submit(0, &[Desc::readable(hdr, 8), Desc::writable(st, 1)], T)
        .unwrap();
    assert_eq!((h.read(st, 1).unwrap()[0], u.len), (S_IOERR, 1));

    // No status byte at all: completed without status (len 0).
    let hdr = header(&mut h, T_IN, 0);
    let u = h.submit(0, &[Desc::readable(hdr, 16)], T).unwrap();
    assert_eq!(u.len, 0);
    // Status descriptor outside memory: same.
    let u = h
        .submit(0, &[Desc::readable(hdr, 16), Desc::writable(outside, 1)], T)
        .unwrap();
    assert_eq!(u.len, 0);

    // Semantic errors.
    let (r, _) = run(&mut h, T_IN, (SIZE / 512) as u64, &[], 512);
    assert_eq!(status(&h, &r), S_IOERR, "read past the end");
    let (r, _) = run(&mut h, T_IN, 0, &[], 100);
    assert_eq!(status(&h, &r), S_IOERR, "length not a multiple of 512");
    let (r, _) = run(&mut h, 99, 0, &[], 0);
    assert_eq!(status(&h, &r), S_UNSUPP, "unknown request type");

    // A head index beyond the queue is dropped (nothing to complete) ...
    h.publish(0, 300).unwrap();
    // ... and the next valid request still works.
    let (r, u) = run(&mut h, T_IN, 1, &[], 512);
    assert_eq!((status(&h, &r), u.len), (S_OK, 513));
    assert_bytes(
        &h.read(r.data, 512).unwrap(),
        &read_file_at(&s.img, 512, 512),
        "data",
    );
    let mut b = s.backend;
    assert!(b.is_running());
}

#[test]
fn completions_follow_avail_order() {
    let s = setup("order", &[]);
    let mut h = harness(&s);
    let mut heads = Vec::new();
    let mut reqs = Vec::new();
    for i in 0..24u64 {
        let r = if i % 3 == 0 {
            publish(&mut h, T_IN, 0, &[], 1 << 20) // big read
        } else {
            publish(&mut h, T_OUT, 4096 + i, &[i as u8; 512], 0) // small write
        };
        heads.push(u32::from(r.head));
        reqs.push(r);
    }
    h.kick(0).unwrap();
    let used = h.wait_used(0, heads.len(), T).unwrap();
    let ids: Vec<u32> = used.iter().map(|u| u.id).collect();
    assert_eq!(ids, heads, "used ring order == avail order");
    for r in &reqs {
        assert_eq!(status(&h, r), S_OK);
    }
}

#[test]
fn readonly_backend_refuses_writes() {
    let s = setup("ro", &["--readonly"]);
    let mut h = harness(&s);
    assert_ne!(h.offered_features() & F_RO, 0, "VIRTIO_BLK_F_RO offered");
    let before = read_file_at(&s.img, 0, 512);
    let (r, _) = run(&mut h, T_OUT, 0, &[0u8; 512], 0);
    assert_eq!(status(&h, &r), S_IOERR);
    assert_bytes(&read_file_at(&s.img, 0, 512), &before, "data");
    let (r, _) = run(&mut h, T_IN, 0, &[], 512);
    assert_eq!(status(&h, &r), S_OK);
    assert_bytes(&h.read(r.data, 512).unwrap(), &before, "data");
}

#[test]
fn garbage_drops_only_that_connection() {
    let s = setup("garbage", &[]);
    {
        let mut h = harness(&s);
        let (r, _) = run(&mut h, T_GET_ID, 0, &[], 20);
        assert_eq!(status(&h, &r), S_OK);
    }
    // A header with an unknown request code, then junk.
    let closed = vhost_harness::send_garbage(&s.vsock, &[0xde; 64], T).unwrap();
    assert!(closed, "backend closes a connection that sends garbage");
    let closed = vhost_harness::send_garbage(&s.vsock, b"GET / HTTP/1.1\r\n\r\n", T).unwrap();
    assert!(closed);
    let mut b = s.backend;
    assert!(b.is_running(), "backend survived");
    let s = Setup { backend: b, ..s };
    let mut h = harness(&s);
    let (r, _) = run(&mut h, T_IN, 2, &[], 512);
    assert_eq!(status(&h, &r), S_OK);
    assert_bytes(
        &h.read(r.data, 512).unwrap(),
        &read_file_at(&s.img, 1024, 512),
        "data",
    );
}

#[test]
fn frontend_disconnect_and_reconnect() {
    let s = setup("reconn", &[]);
    let mut h = harness(&s);
    let (r, _) = run(&mut h, T_OUT, 8, &[0x11; 512], 0);
    assert_eq!(status(&h, &r), S_OK);
    // Publish one request without kicking, then reconnect: the new connection resumes at
    // the used index and processes it exactly once.
    let pending = publish(&mut h, T_IN, 8, &[], 512);
    h.reconnect().expect("reconnect");
    h.kick(0).unwrap();
    let u = h.wait_used(0, 1, T).unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].id, u32::from(pending.head));
    assert_eq!(status(&h, &pending), S_OK);
    assert_bytes(
        &h.read(pending.data, 512).unwrap(),
        &vec![0x11; 512],
        "data",
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(h.pop_used(0).unwrap().is_empty(), "completed exactly once");
    drop(h);
    // A completely new frontend (fresh memory, rings from 0).
    let mut h = harness(&s);
    let (r, _) = run(&mut h, T_IN, 8, &[], 512);
    assert_eq!(status(&h, &r), S_OK);
    assert_bytes(&h.read(r.data, 512).unwrap(), &vec![0x11; 512], "data");
}

/// GET_VRING_BASE during an NBD outage waits for the requests in flight, so the returned
/// base equals the used index.
#[test]
fn get_vring_base_waits_for_in_flight_requests() {
    let mut s = setup("base", &[]);
    let mut h = harness(&s);
    if let Some(mut q) = s.qemu.take() {
        q.kill();
    }
    for i in 0..4u64 {
        publish(&mut h, T_OUT, 100 + 8 * i, &[i as u8 + 1; 4096], 0);
    }
    h.kick(0).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // popped, waiting for NBD
    assert_eq!(h.used_idx(0).unwrap(), 0);
    let (img, nsock, log) = (s.img.clone(), s.nsock.clone(), s.t.path("qemu2.log"));
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        qemu_nbd(&img, "disk", Listen::Unix(&nsock), false, &log)
    });
    let t0 = std::time::Instant::now();
    let base = h.get_vring_base(0).unwrap();
    s.qemu = Some(restart.join().unwrap());
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "GET_VRING_BASE waited"
    );
    assert_eq!(base, 4);
    assert_eq!(
        h.used_idx(0).unwrap(),
        4,
        "avail base == used index after the stop"
    );
    for i in 0..4u64 {
        assert_bytes(
            &read_file_at(&s.img, (100 + 8 * i) * 512, 4096),
            &[i as u8 + 1; 4096],
            "on disk",
        );
    }
}

/// If NBD stays away past the drain timeout, GET_VRING_BASE rewinds to the used index; a
/// frontend that resumes there gets every request done exactly once.
#[test]
fn get_vring_base_rewinds_to_used_index_after_drain_timeout() {
    let mut s = setup("rewind", &["--drain-timeout", "1"]);
    let mut h = harness(&s);
    let (r, _) = run(&mut h, T_OUT, 50, &[0x44; 512], 0);
    assert_eq!(status(&h, &r), S_OK);
    if let Some(mut q) = s.qemu.take() {
        q.kill();
    }
    let reqs: Vec<Req> = (0..3u64)
        .map(|i| publish(&mut h, T_OUT, 60 + i, &[0x50 + i as u8; 512], 0))
        .collect();
    h.kick(0).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let base = h.get_vring_base(0).unwrap();
    assert_eq!(base, 1, "rewound to the used index");
    assert_eq!(h.used_idx(0).unwrap(), 1);
    s.qemu = Some(qemu_nbd(
        &s.img,
        "disk",
        Listen::Unix(&s.nsock),
        false,
        &s.t.path("qemu2.log"),
    ));
    h.reconnect().unwrap();
    h.kick(0).unwrap();
    let used = h.wait_used(0, 3, T).unwrap();
    let ids: Vec<u32> = used.iter().map(|u| u.id).collect();
    assert_eq!(
        ids,
        reqs.iter().map(|r| u32::from(r.head)).collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(h.pop_used(0).unwrap().is_empty(), "nothing completed twice");
    assert_eq!(h.used_idx(0).unwrap(), 4);
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(status(&h, r), S_OK);
        assert_bytes(
            &read_file_at(&s.img, (60 + i as u64) * 512, 512),
            &vec![0x50 + i as u8; 512],
            "data",
        );
    }
}

#[test]
fn nbd_outage_only_delays_requests() {
    let mut s = setup("outage", &[]);
    let mut h = harness(&s);
    let (r, _) = run(&mut h, T_OUT, 0, &[0x22; 512], 0);
    assert_eq!(status(&h, &r), S_OK);
    if let Some(mut q) = s.qemu.take() {
        q.kill();
    }
    let r = publish(&mut h, T_OUT, 1, &[0x33; 1024], 0);
    h.kick(0).unwrap();
    assert!(matches!(
        h.wait_used(0, 1, Duration::from_millis(600)),
        Err(vhost_harness::HarnessError::Timeout)
    ));
    s.qemu = Some(qemu_nbd(
        &s.img,
        "disk",
        Listen::Unix(&s.nsock),
        false,
        &s.t.path("qemu2.log"),
    ));
    let u = h
        .wait_used(0, 1, T)
        .expect("completes after the server is back");
    assert_eq!(u[0].id, u32::from(r.head));
    assert_eq!(status(&h, &r), S_OK);
    assert_bytes(&read_file_at(&s.img, 512, 1024), &vec![0x33; 1024], "data");
}

/// Storage with a 64 KiB maximum payload: a 1 MiB virtio request becomes 16 NBD commands.
#[test]
fn large_requests_are_split_for_small_max_payload() {
    let t = TempDir::new("split");
    let ksock = t.path("kit.sock");
    let vsock = t.path("vhost.sock");
    let _kit = nbdkit(
        &ksock,
        &[
            "--filter=blocksize-policy",
            "memory",
            "size=8M",
            "blocksize-maximum=65536",
            "blocksize-error-policy=error",
        ],
        &t.path("kit.log"),
    );
    let _b = backend(&vsock, &unix_uri("", &ksock), &[], &t.path("backend.log"));
    let mut h = Harness::connect(&vsock, HarnessConfig::default()).unwrap();
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 247) as u8).collect();
    let (r, _) = run(&mut h, T_OUT, 8, &data, 0);
    assert_eq!(status(&h, &r), S_OK);
    let (r, u) = run(&mut h, T_IN, 8, &[], 1 << 20);
    assert_eq!((status(&h, &r), u.len), (S_OK, (1 << 20) + 1));
    assert_bytes(&h.read(r.data, 1 << 20).unwrap(), &data, "1 MiB read back");
}
