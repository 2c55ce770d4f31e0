//! FT link and completer tests: the data path on a mock queue in real guest memory, the VMM
//! played by the other end of a socket pair.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ft_backend::{FtBackend, VmmConn};
use ft_control::{MemWrite, Message, Role, VERSION};
use vhost_harness::output_digest;
use virtio_queue::QueueT;

use crate::ft::{FtCompleter, FtLink, VmmSlots};
use crate::net::completion::Completer;
use crate::net::hdr::MIN_RX_CHAIN_LEN;
use crate::net::rx::{apply_rx_frame, RxFrame, RxOutcome};
use crate::net::stats::NetStats;
use crate::net::testutil::*;
use crate::net::tx::{run_tx, PacketSink};

/// Records what reaches the "TAP", and how many completions had been sent to the VMM when
/// each packet was written.
#[derive(Default)]
pub(super) struct Sink {
    packets: Mutex<Vec<Vec<u8>>>,
    completions_before: Mutex<Vec<u64>>,
    /// The link's counters.
    stats: Arc<NetStats>,
    /// Refuse every packet, as a TAP whose queue is full ("would block").
    refuse: AtomicBool,
}

impl PacketSink for Sink {
    fn write_packet(&self, packet: &[u8]) -> io::Result<()> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.completions_before
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .push(self.stats.snapshot().ft_completions);
        self.packets
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .push(packet.to_vec());
        Ok(())
    }
}

impl Sink {
    /// Packets written so far (with the virtio-net header).
    pub(super) fn packets(&self) -> Vec<Vec<u8>> {
        self.packets.lock().expect("lock").clone()
    }

    /// Frames written so far (without the virtio-net header).
    pub(super) fn frames(&self) -> Vec<Vec<u8>> {
        self.packets().iter().map(|p| p[12..].to_vec()).collect()
    }

    /// For each frame written, the number of completions sent to the VMM before it.
    fn completions_before(&self) -> Vec<u64> {
        self.completions_before.lock().expect("lock").clone()
    }
}

pub(super) fn link() -> (Arc<Sink>, Arc<FtLink>) {
    let stats = Arc::new(NetStats::default());
    let sink = Arc::new(Sink {
        stats: stats.clone(),
        ..Sink::default()
    });
    let link = Arc::new(FtLink::new(sink.clone(), stats));
    (sink, link)
}

/// Attaches a VMM with `role`; returns its end, handshake answer consumed.
fn attach(link: &FtLink, role: Role) -> UnixStream {
    let (ours, mut vmm) = UnixStream::pair().expect("socket pair");
    vmm.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    link.attach(VmmConn::new(ours, 1).expect("conn"), role)
        .expect("attach");
    assert_eq!(recv(&mut vmm), Message::HelloAck { version: VERSION });
    vmm
}

fn recv(vmm: &mut UnixStream) -> Message {
    Message::read_from(vmm).expect("message").expect("not EOF")
}

/// Every message the VMM gets until the backend closes the connection.
fn recv_until_eof(vmm: &mut UnixStream) -> Vec<Message> {
    let mut got = Vec::new();
    while let Some(m) = Message::read_from(vmm).expect("message or EOF") {
        got.push(m);
    }
    got
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
    let bad = drv.add(&[w(
        MEM_SIZE + 0x1000,
        u32::try_from(MIN_RX_CHAIN_LEN).expect("small"),
    )]);
    let good = drv.add(&[w(BUF_BASE, 100), w(BUF_BASE + 0x1000, 1426)]);
    let mut q = drv.queue();
    let mut packet = vec![0u8; 12];
    packet.extend_from_slice(&frame(200, 1));
    let f = RxFrame::from_tap(&packet).expect("frame");
    let slots = Arc::new(VmmSlots::default());
    let mut c = FtCompleter::new(&link, &slots);
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

/// Publishes a TX chain with the packet of `tag` at its own address; returns head and frame.
/// One pass of the TX worker with the FT completer (as the backend's worker thread runs it);
/// returns the number of chains it took.
fn primary_tx(
    q: &mut virtio_queue::Queue,
    m: &vm_memory::GuestMemoryMmap<()>,
    link: &FtLink,
    slots: &Arc<VmmSlots>,
) -> usize {
    run_tx(q, m, &mut FtCompleter::new(link, slots), &link.stats).expect("ok")
}

fn add_tx(drv: &mut Driver, tag: u8) -> (u16, Vec<u8>) {
    let addr = BUF_BASE + 0x1000 * u64::from(tag);
    let (_, f, len) = tx_packet(drv, addr, tag);
    (drv.add(&[r(addr, 12), r(addr + 12, len - 12)]), f)
}

/// Publishes a TX chain the backend refuses (shorter than a header and an Ethernet header).
fn add_refused_tx(drv: &mut Driver) -> u16 {
    drv.add(&[r(BUF_BASE + 0xf000, 10)])
}

#[test]
fn plain_mode_without_vmm_completes_tx_at_once() {
    let (sink, link) = link();
    let m = mem();
    let mut drv = Driver::new(&m);
    let (h0, f0) = add_tx(&mut drv, 0);
    let (h1, f1) = add_tx(&mut drv, 1);
    let mut q = drv.queue();
    let slots = Arc::new(VmmSlots::default());
    let mut c = FtCompleter::new(&link, &slots);
    assert_eq!(run_tx(&mut q, &m, &mut c, &link.stats).expect("ok"), 2);
    assert_eq!(
        c.guest_used(),
        2,
        "completed by the backend, the guest is notified"
    );
    assert_eq!(sink.frames(), vec![f0, f1]);
    assert_eq!(drv.used(), vec![(u32::from(h0), 0), (u32::from(h1), 0)]);
    assert_eq!(link.held_chains(), 0);
}

#[test]
fn primary_tx_completes_each_chain_only_after_its_frame_left_in_id_order() {
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
    let slots = Arc::new(VmmSlots::default());
    let mut c = FtCompleter::new(&link, &slots);
    assert_eq!(run_tx(&mut q, &m, &mut c, &link.stats).expect("ok"), 3);
    assert_eq!(c.guest_used(), 0);
    for (i, (head, hdr, f)) in want.iter().enumerate() {
        let digest = output_digest([&hdr[..], &f[..]]);
        assert_eq!(
            recv(&mut vmm),
            Message::OutputReady {
                id: i as u64 + 1,
                queue: 1,
                head: *head,
                digest
            }
        );
    }
    assert_quiet(&vmm); // no completion before its frame is released
    assert!(sink.frames().is_empty(), "nothing leaves before Release");
    assert!(drv.used().is_empty());
    assert_eq!(link.held(), 3);

    link.release(1, 2);
    assert_eq!(sink.frames(), vec![want[0].2.clone(), want[1].2.clone()]);
    assert_eq!(recv(&mut vmm), tx_done(want[0].0));
    assert_eq!(recv(&mut vmm), tx_done(want[1].0));
    assert_quiet(&vmm); // chain 3 is still held
    link.release(1, 1); // an older release changes nothing
    assert_eq!(sink.frames().len(), 2);
    assert_quiet(&vmm);
    link.release(1, 3);
    assert_eq!(
        sink.frames(),
        want.iter().map(|w| w.2.clone()).collect::<Vec<_>>()
    );
    assert_eq!(recv(&mut vmm), tx_done(want[2].0));
    assert_quiet(&vmm);
    // Each frame was written after the completions of the chains before it and before its
    // own.
    assert_eq!(sink.completions_before(), vec![0, 1, 2]);
    assert_eq!(link.stats.snapshot().ft_completions, 3);
    // The TAP got the cleaned header, the digest covered the guest's.
    assert_eq!(&sink.packets()[0][..12], &[0u8; 12]);
    assert_eq!(link.held(), 0);
    assert!(drv.used().is_empty(), "the VMM writes the used ring");
}

#[test]
fn a_refused_chain_is_completed_after_the_held_chains_before_it() {
    let (sink, link) = link();
    let mut vmm = attach(&link, Role::Primary);
    let m = mem();
    let mut drv = Driver::new(&m);
    let (h0, f0) = add_tx(&mut drv, 0);
    let bad = add_refused_tx(&mut drv);
    let (h2, f2) = add_tx(&mut drv, 2);
    let mut q = drv.queue();
    let slots = Arc::new(VmmSlots::default());
    primary_tx(&mut q, &m, &link, &slots);
    assert_eq!(link.stats.snapshot().tx_bad_chains, 1);
    assert!(matches!(recv(&mut vmm), Message::OutputReady { id: 1, head, .. } if head == h0));
    assert!(matches!(recv(&mut vmm), Message::OutputReady { id: 2, head, .. } if head == h2));
    assert_quiet(&vmm);
    assert_eq!((link.held(), link.held_chains()), (2, 3));

    link.release(1, 1);
    assert_eq!(sink.frames(), vec![f0.clone()]);
    assert_eq!(recv(&mut vmm), tx_done(h0));
    assert_eq!(
        recv(&mut vmm),
        tx_done(bad),
        "then the refused chain behind it"
    );
    assert_quiet(&vmm);
    link.release(1, 2);
    assert_eq!(sink.frames(), vec![f0, f2]);
    assert_eq!(recv(&mut vmm), tx_done(h2));
    assert_quiet(&vmm);

    // With nothing held, a refused chain is completed at once, as before.
    let bad = add_refused_tx(&mut drv);
    primary_tx(&mut q, &m, &link, &slots);
    assert_eq!(recv(&mut vmm), tx_done(bad));
    assert_eq!(link.held_chains(), 0);
    assert!(drv.used().is_empty());
}

#[test]
fn a_released_frame_the_tap_refuses_is_dropped_and_its_chain_completed_once() {
    let (sink, link) = link();
    let mut vmm = attach(&link, Role::Primary);
    let m = mem();
    let mut drv = Driver::new(&m);
    let (h0, _) = add_tx(&mut drv, 0);
    let mut q = drv.queue();
    let slots = Arc::new(VmmSlots::default());
    primary_tx(&mut q, &m, &link, &slots);
    assert!(matches!(recv(&mut vmm), Message::OutputReady { id: 1, .. }));

    // The TAP's queue is full: the frame is dropped and counted, as in plain mode (a lost
    // packet), and the chain is completed all the same, once.
    sink.refuse.store(true, Ordering::Relaxed);
    link.release(1, 1);
    assert!(sink.frames().is_empty());
    assert_eq!(link.stats.snapshot().tx_tap_errors, 1);
    assert_eq!(recv(&mut vmm), tx_done(h0));
    link.release(1, 1);
    link.release(1, 5);
    assert_quiet(&vmm);
    assert_eq!(link.stats.snapshot().ft_completions, 1);
    assert_eq!(link.held_chains(), 0);

    // The next frame goes out normally (already covered by Release { 5 }).
    sink.refuse.store(false, Ordering::Relaxed);
    let (h1, f1) = add_tx(&mut drv, 1);
    primary_tx(&mut q, &m, &link, &slots);
    assert!(matches!(recv(&mut vmm), Message::OutputReady { id: 2, .. }));
    assert_eq!(recv(&mut vmm), tx_done(h1));
    assert_eq!(sink.frames(), vec![f1]);
    assert_quiet(&vmm);
}

#[test]
fn set_role_live_releases_held_and_restores_plain_then_primary_again() {
    let (sink, link) = link();
    let mut vmm = attach(&link, Role::Primary);
    let m = mem();
    let mut drv = Driver::new(&m);
    let (h0, f0) = add_tx(&mut drv, 0);
    let (h1, f1) = add_tx(&mut drv, 1);
    let mut q = drv.queue();
    let slots = Arc::new(VmmSlots::default());
    primary_tx(&mut q, &m, &link, &slots);
    for _ in 0..2 {
        assert!(matches!(recv(&mut vmm), Message::OutputReady { .. }));
    }
    assert_quiet(&vmm);
    assert!(sink.frames().is_empty());

    link.set_role(1, Role::Live);
    assert_eq!(link.role(), Role::Live);
    assert_eq!(sink.frames(), vec![f0, f1], "held frames leave at once");
    assert_eq!(
        recv(&mut vmm),
        tx_done(h0),
        "each followed by its completion"
    );
    assert_eq!(recv(&mut vmm), tx_done(h1));
    assert_eq!(sink.completions_before(), vec![0, 1]);

    // Plain again: the next chain is completed by the backend, after the VMM's two slots.
    let (h, _) = add_tx(&mut drv, 2);
    let mut c = FtCompleter::new(&link, &slots);
    run_tx(&mut q, &m, &mut c, &link.stats).expect("ok");
    assert_eq!(c.guest_used(), 1);
    assert_eq!(sink.frames().len(), 3);
    assert_eq!(drv.used(), vec![(0, 0), (0, 0), (u32::from(h), 0)]);
    assert_quiet(&vmm);

    // And FT again: ids continue on this connection.
    link.set_role(1, Role::Primary);
    let (h, _) = add_tx(&mut drv, 3);
    primary_tx(&mut q, &m, &link, &slots);
    assert!(matches!(recv(&mut vmm), Message::OutputReady { id: 3, head, .. } if head == h));
    assert_quiet(&vmm);
    assert_eq!(sink.frames().len(), 3);
    assert_eq!(link.held(), 1);
}

#[test]
fn detach_discards_held_chains_never_completing_them_and_a_later_plain_frame_leaves() {
    let (sink, link) = link();
    let mut vmm = attach(&link, Role::Primary);
    let m = mem();
    let mut drv = Driver::new(&m);
    let chains: Vec<(u16, Vec<u8>)> = (0..3u8).map(|tag| add_tx(&mut drv, tag)).collect();
    let mut q = drv.queue();
    let slots = Arc::new(VmmSlots::default());
    let mut c = FtCompleter::new(&link, &slots);
    assert_eq!(run_tx(&mut q, &m, &mut c, &link.stats).expect("ok"), 3);
    assert_eq!(c.guest_used(), 0, "completions go to the VMM");
    for _ in 0..3 {
        assert!(matches!(recv(&mut vmm), Message::OutputReady { .. }));
    }
    link.release(1, 1);
    assert_eq!(sink.frames(), vec![chains[0].1.clone()]);
    assert_eq!(recv(&mut vmm), tx_done(chains[0].0));
    assert_eq!(link.held(), 2);
    link.detach(2, "stale serial"); // another connection's detach is ignored
    assert_eq!(link.held(), 2);

    link.detach(1, "closed");
    assert_eq!(link.held_chains(), 0);
    assert_eq!(link.role(), Role::Live);
    assert_eq!(
        recv_until_eof(&mut vmm),
        vec![],
        "the discarded chains are never completed"
    );
    assert_eq!(
        sink.frames(),
        vec![chains[0].1.clone()],
        "unreleased frames never leave once their VMM is gone"
    );
    assert_eq!(link.stats.snapshot().ft_outputs_discarded, 2);
    // A late Release or SetRole of the gone connection changes nothing.
    link.release(1, 3);
    link.set_role(1, Role::Live);
    assert_eq!(sink.frames().len(), 1);
    assert_eq!(link.stats.snapshot().ft_completions, 1);

    // Plain mode: the next frame leaves at once, and the backend completes its chain after
    // the VMM's one slot (the discarded chains take none).
    let (h, f3) = add_tx(&mut drv, 3);
    let mut c = FtCompleter::new(&link, &slots);
    run_tx(&mut q, &m, &mut c, &link.stats).expect("ok");
    assert_eq!(c.guest_used(), 1);
    assert_eq!(sink.frames(), vec![chains[0].1.clone(), f3]);
    assert_eq!(drv.used(), vec![(0, 0), (u32::from(h), 0)]);
}

#[test]
fn a_failed_send_discards_held_chains_and_the_chain_being_announced() {
    let (sink, link) = link();
    let vmm = attach(&link, Role::Primary);
    let m = mem();
    let mut drv = Driver::new(&m);
    add_tx(&mut drv, 0);
    let mut q = drv.queue();
    let slots = Arc::new(VmmSlots::default());
    primary_tx(&mut q, &m, &link, &slots);
    assert_eq!(link.held(), 1);

    // A VMM that went away without us noticing: announcing the next frame fails, the link
    // drops the connection and both chains are discarded: frames not sent, chains never
    // completed (not even in plain mode).
    drop(vmm);
    add_tx(&mut drv, 1);
    let mut c = FtCompleter::new(&link, &slots);
    run_tx(&mut q, &m, &mut c, &link.stats).expect("ok");
    assert_eq!(c.guest_used(), 0);
    assert!(drv.used().is_empty());
    assert!(sink.frames().is_empty(), "no held frame leaked");
    assert_eq!(link.held_chains(), 0);
    assert_eq!(link.role(), Role::Live);
    let s = link.stats.snapshot();
    assert_eq!((s.ft_bad_connections, s.ft_outputs_discarded), (1, 2));
    assert_eq!(s.ft_completions, 0);

    // Plain mode from then on; no slot was taken by the discarded chains.
    let (h2, f2) = add_tx(&mut drv, 2);
    primary_tx(&mut q, &m, &link, &slots);
    assert_eq!(sink.frames(), vec![f2]);
    assert_eq!(drv.used(), vec![(u32::from(h2), 0)]);
}

#[test]
fn a_new_connection_replacing_the_old_one_discards_its_held_chains() {
    let (sink, link) = link();
    let mut old = attach(&link, Role::Primary);
    let m = mem();
    let mut drv = Driver::new(&m);
    add_tx(&mut drv, 0);
    let mut q = drv.queue();
    let slots = Arc::new(VmmSlots::default());
    primary_tx(&mut q, &m, &link, &slots);
    assert_eq!(link.held(), 1);

    let (ours, mut vmm) = UnixStream::pair().expect("socket pair");
    vmm.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    link.attach(VmmConn::new(ours, 2).expect("conn"), Role::Primary)
        .expect("attach");
    assert_eq!(recv(&mut vmm), Message::HelloAck { version: VERSION });
    assert_eq!(link.held_chains(), 0);
    let old_got = recv_until_eof(&mut old);
    assert!(
        matches!(&old_got[..], [Message::OutputReady { id: 1, .. }]),
        "the old connection's chain is never completed: {old_got:?}"
    );
    link.release(2, 1); // the new connection's ids start at 1 again
    assert!(
        sink.frames().is_empty(),
        "the old connection's frame never leaves"
    );

    let (h, _) = add_tx(&mut drv, 1);
    primary_tx(&mut q, &m, &link, &slots);
    assert!(matches!(recv(&mut vmm), Message::OutputReady { id: 1, .. }));
    assert_eq!(
        sink.frames().len(),
        1,
        "covered by the earlier Release {{ 1 }}"
    );
    assert_eq!(recv(&mut vmm), tx_done(h));
    assert_quiet(&vmm);
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
    let slots = Arc::new(VmmSlots::default());
    let mut c = FtCompleter::new(&link, &slots);
    run_tx(&mut q, &m, &mut c, &link.stats).expect("ok");
    assert_eq!(c.guest_used(), 1, "completed at once by the backend");
    assert_eq!(sink.frames().len(), 1);
    assert_eq!(drv.used().len(), 1);
    assert_quiet(&vmm);

    let mut vmm = vmm;
    link.set_role(1, Role::Primary);
    link.release(1, 5);
    let h = drv.add(&[r(BUF_BASE, len)]);
    primary_tx(&mut q, &m, &link, &slots);
    assert!(matches!(recv(&mut vmm), Message::OutputReady { id: 1, .. }));
    assert_eq!(
        sink.frames().len(),
        2,
        "already released by Release {{ 5 }}"
    );
    assert_eq!(recv(&mut vmm), tx_done(h), "and then completed");
    assert_eq!(sink.completions_before(), vec![0, 0]);
    assert_eq!(link.held_chains(), 0);
    assert_quiet(&vmm);
}
