//! FT mode end to end: the backend process (with `--ft-socket`) in a private network
//! namespace, a `vhost-harness` frontend for the rings, an `AF_PACKET` socket on the TAP, and
//! this test playing the VMM on the FT control socket. Needs root.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use ft_control::{MemWrite, Message, Role, VERSION};
use vhost_harness::output_digest;
use vhost_harness::{Desc, Harness, HarnessConfig};
use vm_memory::GuestAddress;

const T: Duration = Duration::from_secs(10);
/// How long a held frame must stay off the TAP to count as held.
const HOLD: Duration = Duration::from_millis(400);
const RX: usize = 0;
const TX: usize = 1;
const HDR: usize = 12;
const RX_BUF: u32 = 1526;

/// The VMM's end of the FT control socket.
struct Vmm(UnixStream);

impl Vmm {
    fn connect(path: &Path, role: Role) -> Vmm {
        let mut s = UnixStream::connect(path).expect("connect FT socket");
        s.set_read_timeout(Some(T)).expect("timeout");
        Message::Hello {
            version: VERSION,
            role,
        }
        .write_to(&mut s)
        .expect("hello");
        let mut v = Vmm(s);
        assert_eq!(v.recv(), Message::HelloAck { version: VERSION });
        v
    }

    fn recv(&mut self) -> Message {
        Message::read_from(&mut self.0)
            .expect("FT message")
            .expect("FT connection open")
    }

    fn send(&mut self, m: Message) {
        m.write_to(&mut self.0).expect("send FT message");
    }

    /// Nothing arrives within `t`.
    fn assert_quiet(&mut self, t: Duration) {
        self.0.set_read_timeout(Some(t)).expect("timeout");
        let mut b = [0u8; 1];
        let r = self.0.read(&mut b);
        assert!(
            matches!(&r, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "unexpected message or EOF: {r:?}"
        );
        self.0.set_read_timeout(Some(T)).expect("timeout");
    }
}

/// A TX chain's completion as the VMM gets it.
fn tx_done(head: u16) -> Message {
    Message::Completion {
        queue: 1,
        head,
        len: 0,
        writes: vec![],
    }
}

/// Backend with `--ft-socket`, namespace, packet socket, frontend. Field order = drop order.
struct Rig {
    h: Harness,
    sock: PacketSocket,
    backend: Backend,
    ft: PathBuf,
    _dir: TempDir,
    _ns: NetNs,
}

impl Rig {
    fn new() -> Rig {
        let ns = NetNs::new();
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "sh", "-c"])
            .arg("for k in all default; do echo 1 > /proc/sys/net/ipv6/conf/$k/disable_ipv6; done")
            .status();
        let dir = TempDir::new();
        let ft = dir.0.join("ft.sock");
        let backend = Backend::start_with(
            &ns,
            &dir.0,
            "vnft0",
            GUEST_MAC_STR,
            &["--ft-socket".as_ref(), ft.as_os_str()],
        );
        let deadline = Instant::now() + T;
        while !ft.exists() {
            assert!(
                Instant::now() < deadline,
                "no FT socket:\n{}",
                backend.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let sock = ns
            .run_in(|| PacketSocket::open("vnft0"))
            .expect("packet socket on the TAP");
        let cfg = HarnessConfig {
            num_queues: 2,
            ..Default::default()
        };
        let h = Harness::connect(&backend.socket, cfg).expect("frontend");
        Rig {
            h,
            sock,
            backend,
            ft,
            _dir: dir,
            _ns: ns,
        }
    }

    /// Publishes one TX chain (header and frame in two descriptors) and kicks; returns the
    /// head and the guest's header bytes.
    fn send_tx(&mut self, frame: &[u8]) -> (u16, [u8; HDR]) {
        // A header with a field the backend ignores (num_buffers) but the digest covers.
        let hdr = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0];
        let a = self.h.alloc((HDR + frame.len()) as u64, 16).expect("alloc");
        self.h.write(a, &hdr).expect("hdr");
        let b = GuestAddress(a.0 + HDR as u64);
        self.h.write(b, frame).expect("frame");
        let head = self
            .h
            .add_chain(
                TX,
                &[
                    Desc::readable(a, HDR as u32),
                    Desc::readable(b, frame.len() as u32),
                ],
            )
            .expect("tx chain");
        self.h.kick(TX).expect("kick");
        (head, hdr)
    }

    /// The next frame of ours (any test tag) on the TAP, within `t`.
    fn next_tag(&self, t: Duration) -> Option<u32> {
        self.sock
            .recv_matching(t, |f| {
                f.len() >= 18 && f[12..14] == TEST_ETHERTYPE.to_be_bytes()
            })
            .map(|f| u32::from_be_bytes([f[14], f[15], f[16], f[17]]))
    }

    /// Applies a completion as the VMM does at a landmark: the writes, then the used element
    /// in slot `slot`, then the used index.
    fn apply(&mut self, queue: usize, slot: u16, m: &Message) {
        let Message::Completion {
            head, len, writes, ..
        } = m
        else {
            panic!("not a completion: {m:?}");
        };
        for w in writes {
            self.h
                .write(GuestAddress(w.gpa), &w.data)
                .expect("apply write");
        }
        let (used, size) = {
            let q = self.h.queue(queue).expect("queue");
            (q.used, q.size)
        };
        let elem = GuestAddress(used.0 + 4 + 8 * u64::from(slot % size));
        let mut e = u32::from(*head).to_le_bytes().to_vec();
        e.extend_from_slice(&len.to_le_bytes());
        self.h.write(elem, &e).expect("used elem");
        self.h
            .write(
                GuestAddress(used.0 + 2),
                &slot.wrapping_add(1).to_le_bytes(),
            )
            .expect("used idx");
    }
}

#[test]
fn primary_rx_completion_goes_to_the_vmm_not_the_used_ring() {
    let mut rig = Rig::new();
    let mut vmm = Vmm::connect(&rig.ft, Role::Primary);
    // One RX chain in two buffers.
    let a = rig.h.alloc(100, 16).expect("alloc");
    let b = rig.h.alloc(u64::from(RX_BUF) - 100, 16).expect("alloc");
    let head = rig
        .h
        .add_chain(
            RX,
            &[Desc::writable(a, 100), Desc::writable(b, RX_BUF - 100)],
        )
        .expect("rx chain");
    rig.h.kick(RX).expect("kick");
    std::thread::sleep(Duration::from_millis(200));
    let frame = test_frame(GUEST_MAC, PEER_MAC, 1, 200);
    rig.sock.send(&frame).expect("send to TAP");

    let mut packet = vec![0u8; HDR];
    packet[10] = 1; // num_buffers
    packet.extend_from_slice(&frame);
    let want = Message::Completion {
        queue: 0,
        head,
        len: packet.len() as u32,
        writes: vec![
            MemWrite {
                gpa: a.0,
                data: packet[..100].to_vec(),
            },
            MemWrite {
                gpa: b.0,
                data: packet[100..].to_vec(),
            },
        ],
    };
    assert_eq!(vmm.recv(), want);
    // The backend wrote neither the used ring, nor the buffers, nor the call eventfd.
    assert!(!rig
        .h
        .wait_call(RX, Duration::from_millis(300))
        .expect("call"));
    assert_eq!(rig.h.used_idx(RX).expect("used idx"), 0);
    assert_eq!(rig.h.read(a, 100).expect("read"), vec![0u8; 100]);
    // Applied by the VMM, the guest sees exactly what plain mode would have written.
    rig.apply(RX, 0, &want);
    let used = rig.h.pop_used(RX).expect("used");
    assert_eq!(
        (used[0].id, used[0].len),
        (u32::from(head), packet.len() as u32)
    );
    let mut got = rig.h.read(a, 100).expect("read");
    got.extend(rig.h.read(b, packet.len() - 100).expect("read"));
    assert_eq!(got, packet);
}

#[test]
fn primary_tx_chain_is_completed_only_after_its_frame_left_in_id_order() {
    let mut rig = Rig::new();
    let mut vmm = Vmm::connect(&rig.ft, Role::Primary);
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| test_frame(BROADCAST, GUEST_MAC, 10 + i, 80))
        .collect();
    let mut heads = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let (head, hdr) = rig.send_tx(f);
        let digest = output_digest([&hdr[..], &f[..]]);
        let id = i as u64 + 1;
        assert_eq!(
            vmm.recv(),
            Message::OutputReady {
                id,
                queue: 1,
                head,
                digest
            }
        );
        heads.push(head);
    }
    vmm.assert_quiet(HOLD); // no completion before the Release
    assert_eq!(rig.next_tag(HOLD), None, "no frame leaves before Release");
    assert_eq!(rig.h.used_idx(TX).expect("used idx"), 0);

    vmm.send(Message::Release { id: 2 });
    // Each completion comes after its frame was written to the TAP.
    assert_eq!(vmm.recv(), tx_done(heads[0]));
    assert_eq!(rig.next_tag(T), Some(10));
    assert_eq!(vmm.recv(), tx_done(heads[1]));
    assert_eq!(rig.next_tag(T), Some(11));
    vmm.assert_quiet(HOLD);
    assert_eq!(rig.next_tag(HOLD), None, "output 3 is still held");
    vmm.send(Message::Release { id: 3 });
    assert_eq!(vmm.recv(), tx_done(heads[2]));
    assert_eq!(rig.next_tag(T), Some(12));
    assert_eq!(
        rig.h.used_idx(TX).expect("used idx"),
        0,
        "the VMM writes it"
    );
    assert!(rig.backend.alive());
}

#[test]
fn set_role_live_releases_held_outputs_and_restores_plain_mode() {
    let mut rig = Rig::new();
    let mut vmm = Vmm::connect(&rig.ft, Role::Primary);
    let mut heads = Vec::new();
    for i in 0..2 {
        heads.push(rig.send_tx(&test_frame(BROADCAST, GUEST_MAC, 20 + i, 64)).0);
        assert!(matches!(vmm.recv(), Message::OutputReady { .. }));
    }
    vmm.assert_quiet(HOLD);
    assert_eq!(rig.next_tag(HOLD), None);
    // The VMM goes live: the held frames leave, each followed by its chain's completion,
    // which the VMM applies.
    vmm.send(Message::SetRole { role: Role::Live });
    assert_eq!(rig.next_tag(T), Some(20));
    assert_eq!(rig.next_tag(T), Some(21));
    for (slot, head) in heads.iter().enumerate() {
        let m = vmm.recv();
        assert_eq!(m, tx_done(*head));
        rig.apply(TX, slot as u16, &m);
    }
    // Plain again: the backend completes the next chain itself, after the VMM's elements.
    let (head, _) = rig.send_tx(&test_frame(BROADCAST, GUEST_MAC, 22, 64));
    assert_eq!(rig.next_tag(T), Some(22));
    let used = rig.h.wait_used(TX, 3, T).expect("used");
    assert_eq!(used[2].id, u32::from(head));
    // RX too.
    let buf = rig.h.alloc(u64::from(RX_BUF), 16).expect("alloc");
    rig.h
        .add_chain(RX, &[Desc::writable(buf, RX_BUF)])
        .expect("rx");
    rig.h.kick(RX).expect("kick");
    std::thread::sleep(Duration::from_millis(200));
    let frame = test_frame(GUEST_MAC, PEER_MAC, 23, 100);
    rig.sock.send(&frame).expect("send");
    let used = rig
        .h
        .wait_used(RX, 1, T)
        .expect("RX completed by the backend");
    assert_eq!(
        rig.h.read(buf, used[0].len as usize).expect("read")[HDR..],
        frame[..]
    );
    // Nothing more was sent to the VMM.
    vmm.assert_quiet(Duration::from_millis(200));
}

/// Waits until the backend's log contains `what`.
fn wait_log(backend: &Backend, what: &str) {
    let deadline = Instant::now() + T;
    while !backend.log_text().contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} in the backend log:\n{}",
            backend.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ft_disconnect_discards_held_outputs_never_completing_them_and_restores_plain_mode() {
    let mut rig = Rig::new();
    let mut vmm = Vmm::connect(&rig.ft, Role::Primary);
    let mut heads = Vec::new();
    for tag in [30, 31] {
        heads.push(rig.send_tx(&test_frame(BROADCAST, GUEST_MAC, tag, 64)).0);
        assert!(matches!(vmm.recv(), Message::OutputReady { .. }));
    }
    vmm.send(Message::Release { id: 1 });
    let done = vmm.recv();
    assert_eq!(done, tx_done(heads[0]));
    assert_eq!(rig.next_tag(T), Some(30), "released output leaves");
    assert_eq!(rig.next_tag(HOLD), None, "output 2 held");
    vmm.assert_quiet(HOLD);
    rig.apply(TX, 0, &done);
    // The VMM goes away without releasing output 2: it must never reach the wire, and its
    // chain is never completed (a surviving VMM would re-execute it).
    drop(vmm);
    wait_log(&rig.backend, "discarding 1 held output(s)");
    assert_eq!(
        rig.next_tag(HOLD),
        None,
        "a held output never leaves once its VMM is gone"
    );
    assert_eq!(rig.h.used_idx(TX).expect("used idx"), 1);
    // Plain mode: the next frame leaves at once (and is the first one seen since 30), and
    // the backend completes its chain after the VMM's one element (the discarded chain
    // takes no slot).
    let (head, _) = rig.send_tx(&test_frame(BROADCAST, GUEST_MAC, 32, 64));
    assert_eq!(rig.next_tag(T), Some(32));
    let used = rig.h.wait_used(TX, 2, T).expect("used");
    assert_eq!(used[1].id, u32::from(head));
    assert!(
        used.iter().all(|u| u.id != u32::from(heads[1])),
        "the discarded chain is never completed: {used:?}"
    );
    assert_eq!(rig.next_tag(HOLD), None, "output 2 still never sent");
    assert!(rig.backend.alive());
}

#[test]
fn garbage_ft_connection_is_dropped_and_the_next_one_works() {
    let mut rig = Rig::new();
    let mut bad = UnixStream::connect(&rig.ft).expect("connect");
    bad.set_read_timeout(Some(T)).expect("timeout");
    bad.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("garbage");
    let mut b = [0u8; 16];
    assert!(
        matches!(bad.read(&mut b), Ok(0) | Err(_)),
        "garbage connection closed"
    );
    // Plain mode meanwhile.
    rig.send_tx(&test_frame(BROADCAST, GUEST_MAC, 40, 64));
    assert_eq!(rig.next_tag(T), Some(40));
    rig.h.wait_used(TX, 1, T).expect("plain completion");
    // A proper VMM after it gets FT mode.
    let mut vmm = Vmm::connect(&rig.ft, Role::Primary);
    rig.send_tx(&test_frame(BROADCAST, GUEST_MAC, 41, 64));
    assert!(matches!(vmm.recv(), Message::OutputReady { id: 1, .. }));
    assert_eq!(rig.next_tag(HOLD), None);
    vmm.send(Message::Release { id: 1 });
    assert_eq!(rig.next_tag(T), Some(41));
    assert!(rig.backend.alive());
    assert!(rig.backend.log_text().contains("FT connection 1: dropped"));
}
