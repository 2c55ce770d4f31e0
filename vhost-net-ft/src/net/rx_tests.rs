//! RX path tests against a driver-side mock queue in real guest memory.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
use std::cell::RefCell;
use std::collections::VecDeque;

use super::*;
use crate::net::completion::GuestCompleter;
use crate::net::hdr::VirtioNetHdr;
use crate::net::testutil::*;

const GOOD: u32 = MIN_RX_CHAIN_LEN as u32;

fn tap_packet(hdr: VirtioNetHdr, frame: &[u8]) -> Vec<u8> {
    let mut p = hdr.to_bytes().to_vec();
    p.extend_from_slice(frame);
    p
}

fn rx_frame(len: usize, seed: u8) -> RxFrame {
    RxFrame::from_tap(&tap_packet(VirtioNetHdr::default(), &frame(len, seed))).expect("frame")
}

/// A TAP stand-in: hands out queued packets, then "would block".
struct FakeTap(RefCell<VecDeque<Vec<u8>>>);

impl FakeTap {
    fn with(packets: Vec<Vec<u8>>) -> Self {
        FakeTap(RefCell::new(packets.into()))
    }
}

impl PacketSource for FakeTap {
    fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.borrow_mut().pop_front() {
            Some(p) => {
                let n = p.len().min(buf.len());
                buf[..n].copy_from_slice(&p[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

#[test]
fn frame_is_written_with_clean_header_and_completed() {
    let m = mem();
    let mut drv = Driver::new(&m);
    let head = drv.add(&[w(BUF_BASE, GOOD)]);
    let mut q = drv.queue();
    let stats = NetStats::default();
    // The TAP says DATA_VALID; the guest did not negotiate GUEST_CSUM and must not see it.
    let hdr = VirtioNetHdr {
        flags: virtio_bindings::virtio_net::VIRTIO_NET_HDR_F_DATA_VALID as u8,
        ..Default::default()
    };
    let f = RxFrame::from_tap(&tap_packet(hdr, &frame(60, 1))).expect("frame");

    let out = apply_rx_frame(&mut q, &m, &f, &mut GuestCompleter::rx(&stats), &stats)
        .expect("used ring ok");
    assert_eq!(out, RxOutcome::Delivered(Completion { head, len: 72 }));
    assert_eq!(drv.used(), vec![(u32::from(head), 72)]);
    assert_eq!(
        drv.read(BUF_BASE, 12),
        VirtioNetHdr::for_rx().to_bytes().to_vec()
    );
    assert_eq!(drv.read(BUF_BASE + 12, 60), frame(60, 1));
    assert_eq!(stats.snapshot().rx_frames, 1);
    assert_eq!(stats.snapshot().rx_bytes, 60);
}

#[test]
fn frame_is_scattered_over_several_descriptors() {
    let m = mem();
    let mut drv = Driver::new(&m);
    // Header alone, then three pieces of the payload in separate places.
    drv.add(&[
        w(BUF_BASE, 12),
        w(BUF_BASE + 0x1000, 10),
        w(BUF_BASE + 0x2000, 20),
        w(BUF_BASE + 0x3000, GOOD),
    ]);
    let mut q = drv.queue();
    let stats = NetStats::default();
    let f = rx_frame(100, 3);
    let out = apply_rx_frame(&mut q, &m, &f, &mut GuestCompleter::rx(&stats), &stats).expect("ok");
    assert!(matches!(
        out,
        RxOutcome::Delivered(Completion { len: 112, .. })
    ));
    let mut got = drv.read(BUF_BASE + 0x1000, 10);
    got.extend(drv.read(BUF_BASE + 0x2000, 20));
    got.extend(drv.read(BUF_BASE + 0x3000, 70));
    assert_eq!(got, frame(100, 3));
}

#[test]
fn bad_chains_are_returned_empty_and_the_frame_goes_to_the_next_good_one() {
    let m = mem();
    let mut drv = Driver::new(&m);
    let outside = drv.add(&[w(MEM_SIZE - 0x100, GOOD)]); // runs past the end of memory
    let readable = drv.add(&[r(BUF_BASE, GOOD)]); // wrong direction
                                                  // Smaller than the frame and below the 1526 bytes a driver must post. (A small chain that
                                                  // does hold the frame is accepted: see `small_chain_that_fits_is_used`.)
    let short = drv.add(&[w(BUF_BASE, 100)]);
    let mixed = drv.add(&[w(BUF_BASE, 12), r(BUF_BASE + 0x1000, GOOD)]);
    let good = drv.add(&[w(BUF_BASE + 0x4000, GOOD)]);
    let mut q = drv.queue();
    let stats = NetStats::default();

    let out = apply_rx_frame(
        &mut q,
        &m,
        &rx_frame(200, 9),
        &mut GuestCompleter::rx(&stats),
        &stats,
    )
    .expect("ok");
    assert_eq!(
        out,
        RxOutcome::Delivered(Completion {
            head: good,
            len: 212
        })
    );
    let expect: Vec<(u32, u32)> = vec![
        (outside.into(), 0),
        (readable.into(), 0),
        (short.into(), 0),
        (mixed.into(), 0),
        (good.into(), 212),
    ];
    assert_eq!(drv.used(), expect, "completed in avail order");
    assert_eq!(drv.read(BUF_BASE + 0x4000 + 12, 200), frame(200, 9));
    assert_eq!(stats.snapshot().rx_bad_chains, 4);
}

#[test]
fn small_chain_that_fits_is_used() {
    let m = mem();
    let mut drv = Driver::new(&m);
    let head = drv.add(&[w(BUF_BASE, 100)]);
    let mut q = drv.queue();
    let stats = NetStats::default();
    let out = apply_rx_frame(
        &mut q,
        &m,
        &rx_frame(88, 0),
        &mut GuestCompleter::rx(&stats),
        &stats,
    )
    .expect("ok");
    assert_eq!(out, RxOutcome::Delivered(Completion { head, len: 100 }));
}

#[test]
fn broken_and_indirect_chains_are_validated() {
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::split::Descriptor;
    let m = mem();
    let mut drv = Driver::new(&m);
    let wn = (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16;
    // `next` beyond the queue size.
    let broken = drv.add_raw(&[Descriptor::new(BUF_BASE, GOOD, wn, QSIZE + 5)]);
    // Indirect table whose second entry points outside guest memory.
    let bad_ind = drv.add_indirect(0x8000, &[w(BUF_BASE, 12), w(MEM_SIZE + 0x1000, GOOD)]);
    // A good indirect chain.
    let good_ind = drv.add_indirect(0x9000, &[w(BUF_BASE, 12), w(BUF_BASE + 0x1000, GOOD)]);
    let mut q = drv.queue();
    let stats = NetStats::default();
    let out = apply_rx_frame(
        &mut q,
        &m,
        &rx_frame(64, 5),
        &mut GuestCompleter::rx(&stats),
        &stats,
    )
    .expect("ok");
    assert!(matches!(out, RxOutcome::Delivered(c) if c.head == good_ind && c.len == 76));
    assert_eq!(
        drv.used(),
        vec![
            (broken.into(), 0),
            (bad_ind.into(), 0),
            (good_ind.into(), 76)
        ]
    );
    assert_eq!(drv.read(BUF_BASE + 0x1000, 64), frame(64, 5));
}

#[test]
fn no_buffer_keeps_the_frame_until_the_guest_refills() {
    let m = mem();
    let mut drv = Driver::new(&m);
    let mut q = drv.queue();
    let stats = NetStats::default();
    let mut bounce = RxBounce::new(1);
    let tap = FakeTap::with(vec![
        tap_packet(VirtioNetHdr::default(), &frame(80, 1)),
        tap_packet(VirtioNetHdr::default(), &frame(90, 2)),
    ]);
    let mut scratch = vec![0u8; RX_SCRATCH_LEN];

    // No buffer at all: one frame is read, waits, polling stops.
    let run = run_rx(
        &mut bounce,
        &tap,
        &mut scratch,
        &mut q,
        &m,
        &mut GuestCompleter::rx(&stats),
        &stats,
    )
    .expect("ok");
    assert_eq!(
        run,
        RxRun {
            poll_tap: false,
            used: 0
        }
    );
    assert_eq!(bounce.len(), 1);
    assert_eq!(tap.0.borrow().len(), 1, "only one frame taken from the TAP");
    assert_eq!(stats.snapshot().rx_no_buffer, 1);

    // The guest posts one buffer: the waiting frame goes in, the next one waits.
    let h1 = drv.add(&[w(BUF_BASE, GOOD)]);
    let run = run_rx(
        &mut bounce,
        &tap,
        &mut scratch,
        &mut q,
        &m,
        &mut GuestCompleter::rx(&stats),
        &stats,
    )
    .expect("ok");
    assert_eq!(
        run,
        RxRun {
            poll_tap: false,
            used: 1
        }
    );
    assert_eq!(drv.used(), vec![(h1.into(), 92)]);
    assert_eq!(drv.read(BUF_BASE + 12, 80), frame(80, 1));

    // Two more buffers: the second frame goes in, the TAP is empty, polling resumes.
    let h2 = drv.add(&[w(BUF_BASE + 0x1000, GOOD)]);
    drv.add(&[w(BUF_BASE + 0x2000, GOOD)]);
    let run = run_rx(
        &mut bounce,
        &tap,
        &mut scratch,
        &mut q,
        &m,
        &mut GuestCompleter::rx(&stats),
        &stats,
    )
    .expect("ok");
    assert_eq!(
        run,
        RxRun {
            poll_tap: true,
            used: 1
        }
    );
    assert_eq!(drv.used()[1], (h2.into(), 102));
    assert!(bounce.is_empty());
    assert_eq!(stats.snapshot().rx_frames, 2);
}

#[test]
fn oversized_frame_is_dropped_and_the_buffer_kept_for_the_next() {
    let m = mem();
    let mut drv = Driver::new(&m);
    let head = drv.add(&[w(BUF_BASE, GOOD)]);
    let mut q = drv.queue();
    let stats = NetStats::default();
    let big = rx_frame(3000, 1);
    assert_eq!(
        apply_rx_frame(&mut q, &m, &big, &mut GuestCompleter::rx(&stats), &stats).expect("ok"),
        RxOutcome::Dropped
    );
    assert!(drv.used().is_empty(), "buffer not consumed");
    assert_eq!(stats.snapshot().rx_dropped_bad_length, 1);
    let small = rx_frame(100, 2);
    assert!(matches!(
        apply_rx_frame(&mut q, &m, &small, &mut GuestCompleter::rx(&stats), &stats).expect("ok"),
        RxOutcome::Delivered(c) if c.head == head
    ));
}

#[test]
fn bad_packets_from_the_tap_are_counted_not_queued() {
    let stats = NetStats::default();
    let mut bounce = RxBounce::new(4);
    let mut scratch = vec![0u8; 64];
    let gso = VirtioNetHdr {
        gso_type: 1,
        ..Default::default()
    };
    let tap = FakeTap::with(vec![
        tap_packet(gso, &frame(40, 0)), // offload requested
        tap_packet(VirtioNetHdr::default(), &frame(10, 0)), // runt
        tap_packet(VirtioNetHdr::default(), &frame(52, 0)), // fills the buffer: too long
        vec![0u8; 5],                   // not even a header
        tap_packet(VirtioNetHdr::default(), &frame(51, 0)), // fits
    ]);
    for _ in 0..5 {
        assert!(matches!(
            fill_one(&mut bounce, &tap, &mut scratch, &stats),
            Fill::Read
        ));
    }
    assert!(matches!(
        fill_one(&mut bounce, &tap, &mut scratch, &stats),
        Fill::WouldBlock
    ));
    assert_eq!(bounce.len(), 1);
    let s = stats.snapshot();
    assert_eq!(s.rx_dropped_bad_header, 1);
    assert_eq!(s.rx_dropped_bad_length, 3);
}

#[test]
fn used_ring_outside_memory_is_an_error_not_a_panic() {
    let m = mem();
    let mut drv = Driver::new(&m);
    drv.add(&[w(BUF_BASE, GOOD)]);
    let mut q = drv.queue();
    q.set_used_ring_address(Some((MEM_SIZE + 0x1000) as u32), Some(0));
    let stats = NetStats::default();
    assert!(apply_rx_frame(
        &mut q,
        &m,
        &rx_frame(60, 0),
        &mut GuestCompleter::rx(&stats),
        &stats
    )
    .is_err());
    assert_eq!(stats.snapshot().used_ring_errors, 1);
}
