//! End-to-end tests: the backend process in a private network namespace, driven through its
//! vhost-user socket by `vhost-harness` (a test frontend with memfd guest memory), with an
//! `AF_PACKET` socket on the TAP interface standing for the outside world. Needs root.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
mod common;

use std::time::Duration;

use common::*;
use vhost_harness::{Desc, Harness, HarnessConfig, F_VERSION_1};
use vm_memory::GuestAddress;

const T: Duration = Duration::from_secs(10);
const RX: usize = 0;
const TX: usize = 1;
const HDR: usize = 12;
const RX_BUF: u32 = 1526;
const MEM_SIZE: u64 = 16 << 20;

/// A namespace with the backend on TAP `vnft0`, a packet socket on that TAP and a connected
/// frontend. Field order is drop order: frontend, socket, backend, directory, namespace.
struct Rig {
    h: Harness,
    sock: PacketSocket,
    backend: Backend,
    _dir: TempDir,
    ns: NetNs,
}

fn connect(socket: &std::path::Path) -> Harness {
    let cfg = HarnessConfig {
        mem_size: MEM_SIZE,
        num_queues: 2,
        queue_size: 256,
        ..Default::default()
    };
    Harness::connect(socket, cfg).expect("frontend connects and sets the device up")
}

impl Rig {
    fn new() -> Rig {
        let ns = NetNs::new();
        // No IPv6 chatter (router solicitations, MLD) on the TAP during the tests.
        // (Errors ignored: without IPv6 in the kernel there is no chatter either.)
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "sh", "-c"])
            .arg("for k in all default; do echo 1 > /proc/sys/net/ipv6/conf/$k/disable_ipv6; done")
            .status();
        let dir = TempDir::new();
        let backend = Backend::start(&ns, &dir.0, "vnft0", GUEST_MAC_STR);
        let sock = ns
            .run_in(|| PacketSocket::open("vnft0"))
            .expect("packet socket on the TAP");
        let h = connect(&backend.socket);
        Rig {
            h,
            sock,
            backend,
            _dir: dir,
            ns,
        }
    }

    /// Puts `header(12 zero bytes) || frame` in guest memory; returns (address, length).
    fn tx_packet(&mut self, frame: &[u8]) -> (GuestAddress, u32) {
        let len = (HDR + frame.len()) as u32;
        let a = self.h.alloc(u64::from(len), 16).expect("alloc");
        self.h.write(a, &[0u8; HDR]).expect("write header");
        self.h
            .write(GuestAddress(a.0 + HDR as u64), frame)
            .expect("write frame");
        (a, len)
    }

    fn expect_on_tap(&self, tag: u32, frame: &[u8]) {
        let got = self
            .sock
            .recv_matching(T, |f| is_test_frame(f, tag))
            .unwrap_or_else(|| panic!("frame {tag} did not appear on the TAP"));
        assert_eq!(got, frame);
    }

    /// Posts `n` RX buffers of `RX_BUF` bytes; returns their (head, address).
    fn post_rx(&mut self, n: usize) -> Vec<(u32, GuestAddress)> {
        let v = (0..n)
            .map(|_| {
                let a = self.h.alloc(u64::from(RX_BUF), 16).expect("alloc");
                let head = self
                    .h
                    .add_chain(RX, &[Desc::writable(a, RX_BUF)])
                    .expect("add rx chain");
                (u32::from(head), a)
            })
            .collect();
        self.h.kick(RX).expect("kick rx");
        v
    }
}

#[test]
fn device_identity_over_vhost_user() {
    let mut rig = Rig::new();
    let f = rig.h.offered_features();
    assert_ne!(f & F_VERSION_1, 0);
    assert_ne!(f & (1 << 5), 0, "VIRTIO_NET_F_MAC");
    assert_ne!(f & (1 << 16), 0, "VIRTIO_NET_F_STATUS");
    let cfg = rig.h.get_config(0, 8).expect("GET_CONFIG");
    assert_eq!(&cfg[..6], &GUEST_MAC);
    assert_eq!(&cfg[6..8], &[1, 0], "link up");
    assert!(rig.backend.alive());
}

#[test]
fn tx_frame_appears_on_the_tap() {
    let mut rig = Rig::new();
    for (tag, len) in [(10u32, 46usize), (11, 1496)] {
        let frame = test_frame(BROADCAST, GUEST_MAC, tag, len);
        let (a, l) = rig.tx_packet(&frame);
        // Header and frame in separate descriptors.
        let used = rig
            .h
            .submit(
                TX,
                &[
                    Desc::readable(a, HDR as u32),
                    Desc::readable(GuestAddress(a.0 + HDR as u64), l - HDR as u32),
                ],
                T,
            )
            .expect("TX chain completed");
        assert_eq!(used.len, 0);
        rig.expect_on_tap(tag, &frame);
    }
}

#[test]
fn frame_injected_into_the_tap_is_received() {
    let mut rig = Rig::new();
    let bufs = rig.post_rx(4);
    // Let the backend see the kick first, so that the frames are picked up by TAP polling.
    std::thread::sleep(Duration::from_millis(200));
    for (i, (head, addr)) in bufs.iter().take(2).enumerate() {
        let frame = test_frame(GUEST_MAC, PEER_MAC, 20 + i as u32, 200);
        rig.sock.send(&frame).expect("send to TAP");
        let used = rig.h.wait_used(RX, 1, T).expect("RX completion");
        assert_eq!(used[0].id, *head);
        assert_eq!(used[0].len as usize, HDR + frame.len());
        let got = rig.h.read(*addr, HDR + frame.len()).expect("read");
        assert_eq!(
            &got[..HDR],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            "num_buffers = 1"
        );
        assert_eq!(&got[HDR..], &frame[..]);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rx_waits_for_buffers_then_delivers_in_order() {
    let mut rig = Rig::new();
    // No buffers yet: frames must wait (one in the backend, the rest in the TAP queue).
    let frames: Vec<Vec<u8>> = (0..5)
        .map(|i| test_frame(GUEST_MAC, PEER_MAC, 30 + i, 60 + i as usize))
        .collect();
    for f in &frames {
        rig.sock.send(f).expect("send");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(rig.h.pop_used(RX).expect("used").is_empty());
    // While the guest has no buffer the backend must not spin on the readable TAP.
    let before = rig.backend.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used_ticks = rig.backend.cpu_ticks() - before;
    assert!(
        used_ticks < 30,
        "backend busy while waiting for buffers: {used_ticks} ticks/s"
    );
    let bufs = rig.post_rx(5);
    let used = rig
        .h
        .wait_used(RX, 5, T)
        .expect("all five delivered after refill");
    for ((u, (head, addr)), f) in used.iter().zip(&bufs).zip(&frames) {
        assert_eq!(u.id, *head, "completed in avail order");
        let got = rig.h.read(*addr, u.len as usize).expect("read");
        assert_eq!(&got[HDR..], &f[..]);
    }
    assert!(rig.backend.log_text().contains("no guest buffer"));

    // After running dry the TAP is polled again once the guest refilled: a frame sent later
    // (not racing the kick) still arrives.
    let more = rig.post_rx(1);
    std::thread::sleep(Duration::from_millis(200));
    let late = test_frame(GUEST_MAC, PEER_MAC, 39, 70);
    rig.sock.send(&late).expect("send");
    let used = rig.h.wait_used(RX, 1, T).expect("late frame delivered");
    assert_eq!(used[0].id, more[0].0);
    let got = rig.h.read(more[0].1, used[0].len as usize).expect("read");
    assert_eq!(&got[HDR..], &late[..]);
}

#[test]
fn descriptor_outside_guest_memory_is_dropped_and_the_next_frame_passes() {
    let mut rig = Rig::new();
    // TX: a chain pointing past the end of guest memory, then a good one.
    let outside = GuestAddress(MEM_SIZE + 0x10_0000);
    let bad = rig
        .h
        .add_chain(TX, &[Desc::readable(outside, 100)])
        .expect("bad chain");
    let frame = test_frame(BROADCAST, GUEST_MAC, 40, 100);
    let (a, l) = rig.tx_packet(&frame);
    let good = rig.h.add_chain(TX, &[Desc::readable(a, l)]).expect("good");
    rig.h.kick(TX).expect("kick");
    let used = rig.h.wait_used(TX, 2, T).expect("both completed");
    assert_eq!(
        used.iter().map(|u| (u.id, u.len)).collect::<Vec<_>>(),
        vec![(u32::from(bad), 0), (u32::from(good), 0)]
    );
    rig.expect_on_tap(40, &frame);

    // RX: a writable chain outside memory is returned with length 0, the frame goes into the
    // next buffer.
    let bad = rig
        .h
        .add_chain(RX, &[Desc::writable(outside, RX_BUF)])
        .expect("bad rx");
    let good = rig.post_rx(1);
    let frame = test_frame(GUEST_MAC, PEER_MAC, 41, 80);
    rig.sock.send(&frame).expect("send");
    let used = rig.h.wait_used(RX, 2, T).expect("rx completions");
    assert_eq!((used[0].id, used[0].len), (u32::from(bad), 0));
    assert_eq!(used[1].id, good[0].0);
    let got = rig.h.read(good[0].1, used[1].len as usize).expect("read");
    assert_eq!(&got[HDR..], &frame[..]);
    assert!(rig.backend.alive());
    assert!(rig.backend.log_text().contains("outside guest memory"));
}

#[test]
fn garbage_on_the_socket_then_a_fresh_connection_works() {
    let rig = Rig::new();
    let Rig {
        h,
        sock,
        mut backend,
        _dir,
        ns: _ns,
    } = rig;
    drop(h); // first frontend goes away
    let garbage: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    let closed = vhost_harness::send_garbage(&backend.socket, &garbage, T).expect("garbage sent");
    assert!(closed, "backend must drop a connection that sends garbage");
    assert!(backend.alive(), "backend must survive garbage");

    // A new frontend gets a working device.
    let mut h = connect(&backend.socket);
    let frame = test_frame(BROADCAST, GUEST_MAC, 50, 64);
    let a = h.alloc(200, 16).expect("alloc");
    h.write(a, &[0u8; HDR]).expect("hdr");
    h.write(GuestAddress(a.0 + HDR as u64), &frame)
        .expect("frame");
    h.submit(TX, &[Desc::readable(a, (HDR + frame.len()) as u32)], T)
        .expect("TX after garbage");
    let got = sock
        .recv_matching(T, |f| is_test_frame(f, 50))
        .expect("frame after reconnect");
    assert_eq!(got, frame);

    // And once more after a clean reconnect of the same frontend.
    h.reconnect().expect("reconnect");
    let b = h.alloc(u64::from(RX_BUF), 16).expect("alloc");
    h.add_chain(RX, &[Desc::writable(b, RX_BUF)])
        .expect("rx buf");
    h.kick(RX).expect("kick");
    let frame = test_frame(GUEST_MAC, PEER_MAC, 51, 64);
    sock.send(&frame).expect("send");
    let used = h.wait_used(RX, 1, T).expect("RX after reconnect");
    let got = h.read(b, used[0].len as usize).expect("read");
    assert_eq!(&got[HDR..], &frame[..]);
    assert!(backend.alive());
    let log = backend.log_text();
    assert!(log.contains("dropped"), "garbage connection logged:\n{log}");
}

/// Whether `f` is the RARP announcement of the guest MAC (as QEMU's qemu_announce_self).
fn is_guest_rarp(f: &[u8]) -> bool {
    f.len() >= 42 && f[12..14] == [0x80, 0x35] && f[6..12] == GUEST_MAC && f[22..28] == GUEST_MAC
}

#[test]
fn starting_the_rings_announces_the_guest_mac_with_rarp() {
    let mut rig = Rig::new();
    let f = rig
        .sock
        .recv_matching(T, is_guest_rarp)
        .expect("RARP announcement after the frontend started the rings");
    assert_eq!(&f[..6], &BROADCAST);
    assert_eq!(f.len(), 60);
    // Once per activation: nothing more while the rings run...
    assert!(rig
        .sock
        .recv_matching(Duration::from_millis(500), is_guest_rarp)
        .is_none());
    // ...and again when a frontend starts them anew.
    rig.h.reconnect().expect("reconnect");
    rig.sock
        .recv_matching(T, is_guest_rarp)
        .expect("RARP announcement after the reconnect");
    assert!(rig.backend.log_text().contains("announced MAC"));
}
