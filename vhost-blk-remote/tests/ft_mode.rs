//! FT mode (`--ft-socket`): the binary driven through vhost-harness (guest side) and an FT
//! client (VMM side), on top of qemu-nbd.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
mod common;

use std::time::{Duration, Instant};

use common::ft::{connect_retry, vmm_apply, FtClient, FtRig};
use common::*;
use ft_control::{MemWrite, Message, Role, VERSION};
use vhost_harness::output_digest;
use vhost_harness::{Desc, Harness, HarnessConfig};
use vm_memory::GuestAddress;

const SIZE: usize = 4 << 20;
/// Deadline for things that must happen.
const T: Duration = Duration::from_secs(15);
/// How long we watch for things that must not happen.
const QUIET: Duration = Duration::from_millis(500);

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

type Setup = FtRig;

fn setup(tag: &str, extra: &[&str]) -> Setup {
    FtRig::start(tag, SIZE, extra)
}

fn harness(s: &Setup) -> Harness {
    Harness::connect(&s.vsock, HarnessConfig::default()).expect("harness connects")
}

fn disk(s: &Setup, sector: u64, len: usize) -> Vec<u8> {
    read_file_at(&s.img, sector * 512, len)
}

/// Waits until the backend's log contains `what`.
#[track_caller]
fn wait_log(s: &Setup, what: &str) {
    let log = s.t.path("backend.log");
    let deadline = Instant::now() + T;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(what)
    {
        assert!(Instant::now() < deadline, "no {what:?} in the backend log");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The image's original content (see `make_image`).
fn original(sector: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (sector + i as u64 / 512) as u8 ^ 0x5a)
        .collect()
}

/// A published request: head, header bytes, data buffer, status byte.
struct Req {
    head: u16,
    hdr: Vec<u8>,
    data: GuestAddress,
    status: GuestAddress,
}

fn publish(h: &mut Harness, rtype: u32, sector: u64, out: &[u8], in_len: u32) -> Req {
    let mut hdr = vec![0u8; 16];
    hdr[0..4].copy_from_slice(&rtype.to_le_bytes());
    hdr[8..16].copy_from_slice(&sector.to_le_bytes());
    let ha = h.alloc(16, 16).unwrap();
    h.write(ha, &hdr).unwrap();
    let status = h.alloc(1, 1).unwrap();
    h.write(status, &[0xff]).unwrap();
    let mut descs = vec![Desc::readable(ha, 16)];
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
    Req {
        head,
        hdr,
        data,
        status,
    }
}

/// What the backend must send for a request that completes with only a status byte.
fn status_writes(r: &Req, status: u8) -> Vec<MemWrite> {
    vec![MemWrite {
        gpa: r.status.0,
        data: vec![status],
    }]
}

/// Publishes a write, kicks, and checks its announcement: returns (request, output id).
fn held_write(h: &mut Harness, c: &FtClient, sector: u64, data: &[u8]) -> (Req, u64) {
    let r = publish(h, T_OUT, sector, data, 0);
    h.kick(0).unwrap();
    let (id, head, digest) = c.output(T);
    assert_eq!(head, r.head);
    assert_eq!(
        digest,
        output_digest([&r.hdr[..], data]),
        "digest of header + data"
    );
    (r, id)
}

/// Plain mode: the request completes through the used ring, status OK.
fn plain_write(h: &mut Harness, sector: u64, data: &[u8]) {
    let r = publish(h, T_OUT, sector, data, 0);
    h.kick(0).unwrap();
    let u = h.wait_used(0, 1, T).expect("plain completion");
    assert_eq!(u[0].id, u32::from(r.head));
    assert_eq!(h.read(r.status, 1).unwrap(), vec![0]);
}

#[test]
fn primary_completions_go_to_the_vmm_and_the_used_ring_is_untouched() {
    let s = setup("ftcomp", &[]);
    let mut h = harness(&s); // EVENT_IDX acknowledged: the plain backend writes avail_event
    let c = FtClient::connect(&s.fsock, Role::Primary);
    let used = h.queue(0).unwrap().used;
    let ring_len = 4 + 8 * 256 + 2;
    let before = h.read(used, ring_len).unwrap();

    // A read with its data split over two buffers.
    let mut head_bytes = vec![0u8; 16];
    head_bytes[8..16].copy_from_slice(&3u64.to_le_bytes());
    let ha = h.alloc(16, 16).unwrap();
    h.write(ha, &head_bytes).unwrap();
    let (b1, b2, st) = (
        h.alloc(512, 512).unwrap(),
        h.alloc(512, 512).unwrap(),
        h.alloc(1, 1).unwrap(),
    );
    h.write(st, &[0xff]).unwrap();
    let head = h
        .add_chain(
            0,
            &[
                Desc::readable(ha, 16),
                Desc::writable(b1, 512),
                Desc::writable(b2, 512),
                Desc::writable(st, 1),
            ],
        )
        .unwrap();
    h.kick(0).unwrap();
    let (h1, len1, w1, m1) = c.completion(T);
    assert_eq!((h1, len1), (head, 1025));
    let want = vec![
        MemWrite {
            gpa: b1.0,
            data: original(3, 512),
        },
        MemWrite {
            gpa: b2.0,
            data: original(4, 512),
        },
        MemWrite {
            gpa: st.0,
            data: vec![0],
        },
    ];
    assert_eq!(w1, want, "read data then status");

    let r = publish(&mut h, T_GET_ID, 0, &[], 20);
    h.kick(0).unwrap();
    let (h2, len2, w2, m2) = c.completion(T);
    let mut id = b"disk".to_vec();
    id.resize(20, 0);
    assert_eq!((h2, len2), (r.head, 21));
    assert_eq!(
        w2,
        vec![
            MemWrite {
                gpa: r.data.0,
                data: id
            },
            MemWrite {
                gpa: r.status.0,
                data: vec![0]
            }
        ]
    );

    // The backend wrote nothing itself and did not signal.
    assert!(
        !h.wait_call(0, QUIET).unwrap(),
        "no call eventfd in FT mode"
    );
    assert_bytes(
        &h.read(used, ring_len).unwrap(),
        &before,
        "used ring (incl. avail_event)",
    );
    assert_eq!(
        h.read(st, 1).unwrap(),
        vec![0xff],
        "status byte not written"
    );
    assert_bytes(
        &h.read(b1, 512).unwrap(),
        &[0u8; 512],
        "read buffer not written",
    );

    // Applied by the "VMM", they show up in avail order.
    for m in [&m1, &m2] {
        vmm_apply(&mut h, m);
    }
    let ids: Vec<u32> = h.pop_used(0).unwrap().iter().map(|u| u.id).collect();
    assert_eq!(ids, vec![u32::from(head), u32::from(r.head)]);
    assert_bytes(&h.read(b2, 512).unwrap(), &original(4, 512), "applied data");
}

#[test]
fn outputs_are_held_until_released_and_leave_in_order() {
    let s = setup("fthold", &[]);
    let mut h = harness(&s);
    let c = FtClient::connect(&s.fsock, Role::Primary);
    let (a, b, cc) = (vec![0xa1; 1024], vec![0xb2; 1024], vec![0xc3; 512]);
    let wa = publish(&mut h, T_OUT, 100, &a, 0);
    let wb = publish(&mut h, T_OUT, 200, &b, 0);
    let rd = publish(&mut h, T_IN, 300, &[], 512);
    let wc = publish(&mut h, T_OUT, 400, &cc, 0);
    let fl = publish(&mut h, T_FLUSH, 0, &[], 0);
    h.kick(0).unwrap();
    let want = [
        (1, wa.head, output_digest([&wa.hdr[..], &a])),
        (2, wb.head, output_digest([&wb.hdr[..], &b])),
        (3, wc.head, output_digest([&wc.hdr[..], &cc])),
        (4, fl.head, output_digest([&fl.hdr[..]])),
    ];
    for w in want {
        assert_eq!(
            c.output(T),
            w,
            "announced in avail order with ids 1, 2, ..."
        );
    }
    c.expect_nothing(QUIET); // the read is done but waits behind the held writes
    for (sector, len) in [(100, 1024), (200, 1024), (400, 512)] {
        assert_bytes(
            &disk(&s, sector, len),
            &original(sector, len),
            "not on disk before Release",
        );
    }

    c.send(&Message::Release { id: 1 });
    let (head, len, writes, _) = c.completion(T);
    assert_eq!((head, len, writes), (wa.head, 1, status_writes(&wa, 0)));
    assert_bytes(&disk(&s, 100, 1024), &a, "released write on disk");
    c.expect_nothing(QUIET); // the read still waits behind write 2
    assert_bytes(
        &disk(&s, 200, 1024),
        &original(200, 1024),
        "write 2 still held",
    );

    c.send(&Message::Release { id: 4 });
    let (head, _, writes, _) = c.completion(T);
    assert_eq!((head, writes), (wb.head, status_writes(&wb, 0)));
    let (head, len, writes, _) = c.completion(T);
    assert_eq!((head, len), (rd.head, 513), "then the read, in avail order");
    assert_eq!(writes[0].data, original(300, 512));
    for r in [&wc, &fl] {
        let (head, _, writes, _) = c.completion(T);
        assert_eq!((head, writes), (r.head, status_writes(r, 0)));
    }
    assert_bytes(&disk(&s, 200, 1024), &b, "write 2 on disk");
    assert_bytes(&disk(&s, 400, 512), &cc, "write 3 on disk");
    assert_eq!(
        h.used_idx(0).unwrap(),
        0,
        "the backend never touched the used ring"
    );
}

#[test]
fn set_role_live_releases_held_outputs_and_restores_plain_mode() {
    let s = setup("ftlive", &[]);
    let mut h = harness(&s);
    let c = FtClient::connect(&s.fsock, Role::Primary);
    // One completion handled by the VMM: the backend's used position must skip it.
    publish(&mut h, T_GET_ID, 0, &[], 20);
    h.kick(0).unwrap();
    let (_, _, _, m) = c.completion(T);
    vmm_apply(&mut h, &m);
    assert_eq!(h.pop_used(0).unwrap().len(), 1);

    let (w1, id) = held_write(&mut h, &c, 10, &[0x11; 512]);
    assert_eq!(id, 1);
    c.expect_nothing(QUIET);
    assert_bytes(&disk(&s, 10, 512), &original(10, 512), "held");

    c.send(&Message::SetRole { role: Role::Live });
    let u = h
        .wait_used(0, 1, T)
        .expect("completed by the backend itself");
    assert_eq!(u[0].id, u32::from(w1.head));
    assert_eq!(h.used_idx(0).unwrap(), 2, "after the VMM's entry");
    assert_eq!(h.read(w1.status, 1).unwrap(), vec![0]);
    assert_bytes(
        &disk(&s, 10, 512),
        &[0x11; 512],
        "released on SetRole(Live)",
    );
    plain_write(&mut h, 11, &[0x22; 512]);
    assert_bytes(&disk(&s, 11, 512), &[0x22; 512], "plain write");
    c.expect_nothing(QUIET);

    // Back to FT mode on the same connection: ids continue.
    c.send(&Message::SetRole {
        role: Role::Primary,
    });
    std::thread::sleep(Duration::from_millis(100)); // let the backend read it
    let (w3, id) = held_write(&mut h, &c, 12, &[0x33; 512]);
    assert_eq!(id, 2);
    c.expect_nothing(QUIET);
    assert_bytes(&disk(&s, 12, 512), &original(12, 512), "held again");
    c.send(&Message::Release { id: 2 });
    let (head, _, writes, _) = c.completion(T);
    assert_eq!((head, writes), (w3.head, status_writes(&w3, 0)));
    assert_bytes(&disk(&s, 12, 512), &[0x33; 512], "released");
}

#[test]
fn ft_disconnect_discards_held_outputs_and_a_fresh_connection_works() {
    let s = setup("ftdisc", &[]);
    let mut h = harness(&s);
    let c = FtClient::connect(&s.fsock, Role::Primary);
    let (w1, _) = held_write(&mut h, &c, 20, &[0x44; 512]);
    let (w2, id) = held_write(&mut h, &c, 21, &[0x45; 512]);
    assert_eq!(id, 2);
    c.send(&Message::Release { id: 1 });
    let (head, _, writes, m) = c.completion(T);
    assert_eq!((head, writes), (w1.head, status_writes(&w1, 0)));
    vmm_apply(&mut h, &m);
    assert_bytes(&disk(&s, 20, 512), &[0x44; 512], "released write on disk");

    // The VMM goes away (killed, or halted after losing the arbiter) before releasing
    // output 2: the backup may go live without it, so it must never reach the disk.
    drop(c);
    wait_log(&s, "discarding 1 held output(s)");
    assert!(
        !h.wait_call(0, QUIET).unwrap(),
        "no completion for a discarded output"
    );
    assert_eq!(h.used_idx(0).unwrap(), 1, "only the VMM's entry");
    assert_eq!(
        h.read(w2.status, 1).unwrap(),
        vec![0xff],
        "status not written"
    );
    assert_bytes(
        &disk(&s, 21, 512),
        &original(21, 512),
        "a discarded output is never issued",
    );

    // A fresh frontend connection (the old one's VMM is gone) is plain and works.
    drop(h);
    let mut h = harness(&s);
    plain_write(&mut h, 22, &[0x66; 512]);
    assert_bytes(&disk(&s, 22, 512), &[0x66; 512], "plain write");
    // And so does a new VMM connection, numbering its outputs from 1 again.
    let c = FtClient::connect(&s.fsock, Role::Primary);
    let (w3, id) = held_write(&mut h, &c, 23, &[0x67; 512]);
    assert_eq!(id, 1);
    c.expect_nothing(QUIET);
    c.send(&Message::Release { id: 1 });
    let (head, _, writes, _) = c.completion(T);
    assert_eq!((head, writes), (w3.head, status_writes(&w3, 0)));
    assert_bytes(&disk(&s, 23, 512), &[0x67; 512], "released");
    assert_bytes(
        &disk(&s, 21, 512),
        &original(21, 512),
        "the discarded output stays discarded",
    );
}

/// After a discarded output its frontend connection completes nothing more (avail order),
/// but stopping the ring does not wait for it: the ring is rewound to the used index at
/// once, and a frontend that resumes there (the ring-resume path) gets the requests redone.
#[test]
fn a_ring_behind_a_discarded_output_is_rewound_at_once_and_redone_on_resume() {
    let s = setup("ftredo", &["--drain-timeout", "10"]);
    let mut h = harness(&s);
    let c = FtClient::connect(&s.fsock, Role::Primary);
    let (w1, _) = held_write(&mut h, &c, 60, &[0x61; 512]);
    drop(c);
    wait_log(&s, "discarding 1 held output(s)");
    // Plain mode now, but a write behind the lost request is not issued either: its
    // completion could never be applied, and it may come from the VMM that is gone.
    let w2 = publish(&mut h, T_OUT, 61, &[0x62; 512], 0);
    h.kick(0).unwrap();
    wait_log(&s, "output of abandoned request");
    assert!(!h.wait_call(0, QUIET).unwrap(), "nothing completed");
    assert_eq!(h.used_idx(0).unwrap(), 0);
    assert_bytes(&disk(&s, 60, 512), &original(60, 512), "discarded");
    assert_bytes(&disk(&s, 61, 512), &original(61, 512), "not issued");

    let t0 = Instant::now();
    assert_eq!(h.get_vring_base(0).unwrap(), 0, "rewound to the used index");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "did not wait for the drain timeout: {:?}",
        t0.elapsed()
    );
    h.reconnect().unwrap();
    h.kick(0).unwrap();
    let ids: Vec<u32> = h
        .wait_used(0, 2, T)
        .expect("redone in plain mode")
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, vec![u32::from(w1.head), u32::from(w2.head)]);
    assert_bytes(&disk(&s, 60, 512), &[0x61; 512], "redone");
    assert_bytes(&disk(&s, 61, 512), &[0x62; 512], "redone");
}

#[test]
fn without_a_primary_vmm_the_backend_is_plain() {
    let s = setup("ftplain", &[]);
    let mut h = harness(&s);
    plain_write(&mut h, 30, &[0x77; 512]); // nobody on the FT socket
    assert_bytes(&disk(&s, 30, 512), &[0x77; 512], "written");
    let c = FtClient::connect(&s.fsock, Role::Live);
    plain_write(&mut h, 31, &[0x78; 512]);
    assert_bytes(&disk(&s, 31, 512), &[0x78; 512], "written");
    c.expect_nothing(QUIET);
}

#[test]
fn garbage_on_the_ft_socket_drops_only_that_connection() {
    use std::io::{Read, Write};
    let s = setup("ftgarbage", &[]);
    let mut h = harness(&s);
    let eof = |mut st: std::os::unix::net::UnixStream| {
        st.set_read_timeout(Some(T)).unwrap();
        let mut b = [0u8; 64];
        loop {
            match st.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue, // e.g. a HelloAck
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    };
    // Not the protocol at all.
    let mut g = connect_retry(&s.fsock);
    g.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(eof(g), "connection closed");
    // A wrong version.
    let mut g = connect_retry(&s.fsock);
    Message::Hello {
        version: VERSION + 1,
        role: Role::Primary,
    }
    .write_to(&mut g)
    .unwrap();
    assert!(eof(g), "connection closed");
    // A good handshake, an output held, then an unknown message type: the connection is
    // dropped and the held output discarded.
    let c = FtClient::connect(&s.fsock, Role::Primary);
    held_write(&mut h, &c, 40, &[0x88; 512]);
    c.send_raw(&[1, 0, 0, 0, 99]);
    assert!(c.closed_within(T), "connection closed");
    wait_log(&s, "discarding 1 held output(s)");
    assert!(
        !h.wait_call(0, QUIET).unwrap(),
        "no completion for a discarded output"
    );
    assert_eq!(h.used_idx(0).unwrap(), 0);
    assert_bytes(&disk(&s, 40, 512), &original(40, 512), "discarded");
    drop(c);

    let mut b = s.backend;
    assert!(b.is_running(), "backend survived");
    let s = Setup { backend: b, ..s };
    // The next VMM, with a fresh frontend connection, works.
    drop(h);
    let mut h = harness(&s);
    let c = FtClient::connect(&s.fsock, Role::Primary);
    let (_, id) = held_write(&mut h, &c, 41, &[0x99; 512]);
    c.send(&Message::Release { id });
    c.completion(T);
    assert_bytes(&disk(&s, 41, 512), &[0x99; 512], "next connection works");
}

/// GET_VRING_BASE waits for held outputs (the VMM can release them meanwhile); past the
/// drain timeout it abandons them: they are never issued, even if released later.
#[test]
fn get_vring_base_waits_for_held_outputs_then_abandons_them() {
    let s = setup("ftbase", &["--drain-timeout", "1"]);
    let mut h = harness(&s);
    let c = FtClient::connect(&s.fsock, Role::Primary);
    let (_, id) = held_write(&mut h, &c, 50, &[0xab; 512]);
    let mut tx = c.sender();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        Message::Release { id }.write_to(&mut tx).unwrap();
    });
    let t0 = Instant::now();
    assert_eq!(h.get_vring_base(0).unwrap(), 1, "drained");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "waited for the release"
    );
    releaser.join().unwrap();
    let (_, _, _, m) = c.completion(T);
    vmm_apply(&mut h, &m);
    h.pop_used(0).unwrap();
    assert_bytes(&disk(&s, 50, 512), &[0xab; 512], "written");

    h.reconnect().unwrap(); // rings resume at the used index (1)
    let (_, id) = held_write(&mut h, &c, 51, &[0xcd; 512]);
    assert_eq!(id, 2);
    let t0 = Instant::now();
    assert_eq!(h.get_vring_base(0).unwrap(), 1, "rewound to the used index");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "waited for the drain timeout"
    );
    c.send(&Message::Release { id: 2 });
    c.expect_nothing(QUIET);
    assert_bytes(
        &disk(&s, 51, 512),
        &original(51, 512),
        "abandoned output never issued",
    );
}
