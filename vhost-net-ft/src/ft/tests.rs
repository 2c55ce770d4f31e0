//! FT link and completer tests: the data path on a mock queue in real guest memory, the VMM
//! played by the other end of a socket pair.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ft_control::{output_digest, MemWrite, Message, Role, VERSION};
use virtio_queue::QueueT;

use crate::ft::{FtCompleter, FtLink};
use crate::net::completion::Completer;
use crate::net::hdr::MIN_RX_CHAIN_LEN;
use crate::net::rx::{apply_rx_frame, RxFrame, RxOutcome};
use crate::net::stats::NetStats;
use crate::net::testutil::*;
use crate::net::tx::{run_tx, PacketSink};

/// Records what reaches the "TAP".
#[derive(Default)]
pub(super) struct Sink(Mutex<Vec<Vec<u8>>>);

impl PacketSink for Sink {
    fn write_packet(&self, packet: &[u8]) -> io::Result<()> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .push(packet.to_vec());
        Ok(())
    }
}

impl Sink {
    /// Frames written so far (without the virtio-net header).
    pub(super) fn frames(&self) -> Vec<Vec<u8>> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .map(|p| p[12..].to_vec())
            .collect()
    }
}

pub(super) fn link() -> (Arc<Sink>, Arc<FtLink>) {
    let sink = Arc::new(Sink::default());
    let link = Arc::new(FtLink::new(sink.clone(), Arc::new(NetStats::default())));
    (sink, link)
}

/// Attaches a VMM with `role`; returns its end, handshake answer consumed.
fn attach(link: &FtLink, role: Role) -> UnixStream {
    let (ours, mut vmm) = UnixStream::pair().expect("socket pair");
    vmm.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    link.attach(ours, role, 1).expect("attach");
    assert_eq!(recv(&mut vmm), Message::HelloAck { version: VERSION });
    vmm
}

fn recv(vmm: &mut UnixStream) -> Message {
    Message::read_from(vmm).expect("message").expect("not EOF")
}

/// Nothing more is waiting on the VMM's end.
fn assert_quiet(vmm: &UnixStream) {
    vmm.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    let r = io::Read::read(&mut &*vmm, &mut b);
    assert!(
        matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        "unexpected: {r:?}"
    );
    vmm.set_nonblocking(false).expect("blocking");
}

/// A guest TX packet: a header with fields the backend ignores but the digest covers.
fn tx_packet(drv: &Driver, addr: u64, tag: u8) -> (Vec<u8>, Vec<u8>, u32) {
    let hdr = vec![0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 3, 0];
    let f = frame(60 + usize::from(tag), tag);
    drv.write(addr, &hdr);
    drv.write(addr + 12, &f);
    (hdr, f.clone(), 72 + u32::from(tag))
}

#[test]
fn primary_rx_sends_the_writes_and_leaves_guest_memory_and_used_ring_alone() {
    let (_sink, link) = link();
    let mut vmm = attach(&link, Role::Primary);
    let m = mem();
    let mut drv = Driver::new(&m);
    let bad = drv.add(&[w(MEM_SIZE + 0x1000, MIN_RX_CHAIN_LEN as u32)]);
    let good = drv.add(&[w(BUF_BASE, 100), w(BUF_BASE + 0x1000, 1426)]);
    let mut q = drv.queue();
    let mut packet = vec![0u8; 12];
    packet.extend_from_slice(&frame(200, 1));
    let f = RxFrame::from_tap(&packet).expect("frame");
    let mut c = FtCompleter::new(&link);
    let out = apply_rx_frame(&mut q, &m, &f, &mut c, &link.stats).expect("ok");
    assert!(matches!(out, RxOutcome::Delivered(d) if d.head == good && d.len == 212));
    assert_eq!(c.guest_used(), 0, "no notification in FT mode");
    assert_eq!(
        recv(&mut vmm),
        Message::Completion {
            queue: 0,
            head: bad,
            len: 0,
            writes: vec![]
        },
        "refused chain first (avail order)"
    );
    let p = f.packet();
    assert_eq!(
        recv(&mut vmm),
        Message::Completion {
            queue: 0,
            head: good,
            len: 212,
            writes: vec![
                MemWrite {
                    gpa: BUF_BASE,
                    data: p[..100].to_vec()
                },
                MemWrite {
                    gpa: BUF_BASE + 0x1000,
                    data: p[100..].to_vec()
                },
            ],
        }
    );
    assert!(drv.used().is_empty(), "used ring untouched");
    assert_eq!(
        drv.read(BUF_BASE, 100),
        vec![0u8; 100],
        "guest memory untouched"
    );
    assert_eq!(q.next_used(), 2, "slots the VMM fills are counted");
    assert_quiet(&vmm);
}

#[test]
fn primary_tx_holds_frames_until_released_in_id_order() {
    let (sink, link) = link();
    let mut vmm = attach(&link, Role::Primary);
    let m = mem();
    let mut drv = Driver::new(&m);
    let mut want = Vec::new();
    for tag in 0..3u8 {
        let addr = BUF_BASE + 0x1000 * u64::from(tag);
        let (hdr, f, len) = tx_packet(&drv, addr, tag);
        let head = drv.add(&[r(addr, 12), r(addr + 12, len - 12)]);
        want.push((head, hdr, f));
    }
    let mut q = drv.queue();
    let mut c = FtCompleter::new(&link);
    assert_eq!(run_tx(&mut q, &m, &mut c, &link.stats).expect("ok"), 3);
    assert_eq!(c.guest_used(), 0);
    for (i, (head, hdr, f)) in want.iter().enumerate() {
        let digest = output_digest([&hdr[..], &f[..]]);
        let id = i as u64 + 1;
        assert_eq!(
            recv(&mut vmm),
            Message::OutputReady {
                id,
                queue: 1,
                head: *head,
                digest
            }
        );
        assert_eq!(
            recv(&mut vmm),
            Message::Completion {
                queue: 1,
                head: *head,
                len: 0,
                writes: vec![]
            }
        );
    }
    assert!(sink.frames().is_empty(), "nothing leaves before Release");
    assert!(drv.used().is_empty());
    assert_eq!(link.held(), 3);
    link.release(1, 2);
    assert_eq!(sink.frames(), vec![want[0].2.clone(), want[1].2.clone()]);
    link.release(1, 1); // an older release changes nothing
    assert_eq!(sink.frames().len(), 2);
    link.release(1, 3);
    assert_eq!(
        sink.frames(),
        want.iter().map(|w| w.2.clone()).collect::<Vec<_>>()
    );
    // The TAP got the cleaned header, the digest covered the guest's.
    assert_eq!(&sink.0.lock().expect("lock")[0][..12], &[0u8; 12]);
    assert_eq!(link.held(), 0);
}

#[test]
fn set_role_live_releases_held_and_restores_plain_then_primary_again() {
    let (sink, link) = link();
    let mut vmm = attach(&link, Role::Primary);
    let m = mem();
    let mut drv = Driver::new(&m);
    let (_, f0, len) = tx_packet(&drv, BUF_BASE, 0);
    drv.add(&[r(BUF_BASE, len)]);
    drv.add(&[r(BUF_BASE, len)]);
    let mut q = drv.queue();
    run_tx(&mut q, &m, &mut FtCompleter::new(&link), &link.stats).expect("ok");
    for _ in 0..4 {
        recv(&mut vmm);
    }
    assert!(sink.frames().is_empty());
    link.set_role(1, Role::Live);
    assert_eq!(link.role(), Role::Live);
    assert_eq!(
        sink.frames(),
        vec![f0.clone(), f0.clone()],
        "held frames leave at once"
    );

    // Plain again: the next chain is completed by the backend, after the VMM's two slots.
    let h = drv.add(&[r(BUF_BASE, len)]);
    let mut c = FtCompleter::new(&link);
    run_tx(&mut q, &m, &mut c, &link.stats).expect("ok");
    assert_eq!(c.guest_used(), 1);
    assert_eq!(sink.frames().len(), 3);
    assert_eq!(drv.used(), vec![(0, 0), (0, 0), (u32::from(h), 0)]);
    assert_quiet(&vmm);

    // And FT again: ids continue on this connection.
    link.set_role(1, Role::Primary);
    let h = drv.add(&[r(BUF_BASE, len)]);
    run_tx(&mut q, &m, &mut FtCompleter::new(&link), &link.stats).expect("ok");
    assert!(matches!(recv(&mut vmm), Message::OutputReady { id: 3, head, .. } if head == h));
    assert_eq!(sink.frames().len(), 3);
    assert_eq!(link.held(), 1);
}

/// Publishes a TX chain with the packet of `tag` at its own address; returns head and frame.
fn add_tx(drv: &mut Driver, tag: u8) -> (u16, Vec<u8>) {
    let addr = BUF_BASE + 0x1000 * u64::from(tag);
    let (_, f, len) = tx_packet(drv, addr, tag);
    (drv.add(&[r(addr, 12), r(addr + 12, len - 12)]), f)
}

#[test]
fn detach_discards_held_frames_and_a_later_plain_frame_leaves() {
    let (sink, link) = link();
    let _vmm = attach(&link, Role::Primary);
    let m = mem();
    let mut drv = Driver::new(&m);
    let frames: Vec<Vec<u8>> = (0..3u8).map(|tag| add_tx(&mut drv, tag).1).collect();
    let mut q = drv.queue();
    let mut c = FtCompleter::new(&link);
    assert_eq!(run_tx(&mut q, &m, &mut c, &link.stats).expect("ok"), 3);
    assert_eq!(c.guest_used(), 0, "completions went to the VMM");
    link.release(1, 1);
    assert_eq!(sink.frames(), vec![frames[0].clone()]);
    assert_eq!(link.held(), 2);
    link.detach(2, "stale serial"); // another connection's detach is ignored
    assert_eq!(link.held(), 2);

    link.detach(1, "closed");
    assert_eq!(link.held(), 0);
    assert_eq!(link.role(), Role::Live);
    assert_eq!(
        sink.frames(),
        vec![frames[0].clone()],
        "unreleased frames never leave once their VMM is gone"
    );
    assert_eq!(link.stats.snapshot().ft_outputs_discarded, 2);
    // A late Release or SetRole of the gone connection changes nothing.
    link.release(1, 3);
    link.set_role(1, Role::Live);
    assert_eq!(sink.frames().len(), 1);

    // Plain mode: the next frame leaves at once, and the backend completes its chain.
    let (h, f3) = add_tx(&mut drv, 3);
    let mut c = FtCompleter::new(&link);
    run_tx(&mut q, &m, &mut c, &link.stats).expect("ok");
    assert_eq!(c.guest_used(), 1);
    assert_eq!(sink.frames(), vec![frames[0].clone(), f3]);
    assert_eq!(
        drv.used(),
        vec![(0, 0), (0, 0), (0, 0), (u32::from(h), 0)],
        "after the VMM's three slots"
    );
}

#[test]
fn a_failed_send_discards_held_frames_and_the_frame_being_announced() {
    let (sink, link) = link();
    let vmm = attach(&link, Role::Primary);
    let m = mem();
    let mut drv = Driver::new(&m);
    add_tx(&mut drv, 0);
    let mut q = drv.queue();
    run_tx(&mut q, &m, &mut FtCompleter::new(&link), &link.stats).expect("ok");
    assert_eq!(link.held(), 1);

    // A VMM that went away without us noticing: announcing the next frame fails, the link
    // drops the connection, both frames are discarded, and the chain is completed in plain
    // mode (used ring written, frame not sent).
    drop(vmm);
    let (h1, _) = add_tx(&mut drv, 1);
    let mut c = FtCompleter::new(&link);
    run_tx(&mut q, &m, &mut c, &link.stats).expect("ok");
    assert_eq!(c.guest_used(), 1);
    assert_eq!(drv.used().last(), Some(&(u32::from(h1), 0)));
    assert!(sink.frames().is_empty(), "no held frame leaked");
    assert_eq!(link.held(), 0);
    assert_eq!(link.role(), Role::Live);
    let s = link.stats.snapshot();
    assert_eq!((s.ft_bad_connections, s.ft_outputs_discarded), (1, 2));

    // Plain mode from then on.
    let (_, f2) = add_tx(&mut drv, 2);
    run_tx(&mut q, &m, &mut FtCompleter::new(&link), &link.stats).expect("ok");
    assert_eq!(sink.frames(), vec![f2]);
}

#[test]
fn a_new_connection_replacing_the_old_one_discards_its_held_frames() {
    let (sink, link) = link();
    let _old = attach(&link, Role::Primary);
    let m = mem();
    let mut drv = Driver::new(&m);
    add_tx(&mut drv, 0);
    let mut q = drv.queue();
    run_tx(&mut q, &m, &mut FtCompleter::new(&link), &link.stats).expect("ok");
    assert_eq!(link.held(), 1);

    let (ours, mut vmm) = UnixStream::pair().expect("socket pair");
    vmm.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    link.attach(ours, Role::Primary, 2).expect("attach");
    assert_eq!(recv(&mut vmm), Message::HelloAck { version: VERSION });
    assert_eq!(link.held(), 0);
    link.release(2, 1); // the new connection's ids start at 1 again
    assert!(
        sink.frames().is_empty(),
        "the old connection's frame never leaves"
    );

    add_tx(&mut drv, 1);
    run_tx(&mut q, &m, &mut FtCompleter::new(&link), &link.stats).expect("ok");
    assert!(matches!(recv(&mut vmm), Message::OutputReady { id: 1, .. }));
    assert_eq!(
        sink.frames().len(),
        1,
        "covered by the earlier Release {{ 1 }}"
    );
}

#[test]
fn live_hello_is_plain_and_release_ahead_lets_later_outputs_leave_at_once() {
    let (sink, link) = link();
    let vmm = attach(&link, Role::Live);
    let m = mem();
    let mut drv = Driver::new(&m);
    let (_, _, len) = tx_packet(&drv, BUF_BASE, 0);
    drv.add(&[r(BUF_BASE, len)]);
    let mut q = drv.queue();
    run_tx(&mut q, &m, &mut FtCompleter::new(&link), &link.stats).expect("ok");
    assert_eq!(sink.frames().len(), 1);
    assert_eq!(drv.used().len(), 1);
    assert_quiet(&vmm);

    let mut vmm = vmm;
    link.set_role(1, Role::Primary);
    link.release(1, 5);
    drv.add(&[r(BUF_BASE, len)]);
    run_tx(&mut q, &m, &mut FtCompleter::new(&link), &link.stats).expect("ok");
    assert!(matches!(recv(&mut vmm), Message::OutputReady { id: 1, .. }));
    assert_eq!(
        sink.frames().len(),
        2,
        "already released by Release {{ 5 }}"
    );
    assert_eq!(link.held(), 0);
}
