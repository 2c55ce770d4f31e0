//! TX path tests against a driver-side mock queue in real guest memory.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
use std::sync::Mutex;

use super::*;
use crate::net::completion::GuestCompleter;
use crate::net::testutil::*;

/// A TAP stand-in recording written packets (or failing).
#[derive(Default)]
struct FakeTap {
    written: Mutex<Vec<Vec<u8>>>,
    fail: bool,
}

impl PacketSink for FakeTap {
    fn write_packet(&self, packet: &[u8]) -> io::Result<()> {
        if self.fail {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.written
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .push(packet.to_vec());
        Ok(())
    }
}

fn setup(fail: bool) -> (Arc<FakeTap>, Arc<NetStats>, TapOutput) {
    let tap = Arc::new(FakeTap {
        fail,
        ..Default::default()
    });
    let stats = Arc::new(NetStats::default());
    let out = TapOutput::new(tap.clone(), stats.clone());
    (tap, stats, out)
}

fn written(tap: &FakeTap) -> Vec<Vec<u8>> {
    tap.written.lock().expect("lock").clone()
}

/// Puts `hdr || frame` at `addr` in guest memory.
fn put_packet(drv: &Driver, addr: u64, hdr: [u8; 12], frame: &[u8]) -> u32 {
    drv.write(addr, &hdr);
    drv.write(addr + 12, frame);
    (12 + frame.len()) as u32
}

#[test]
fn frame_reaches_the_tap_with_a_clean_header_and_chain_is_completed() {
    let m = mem();
    let mut drv = Driver::new(&m);
    let f = frame(60, 4);
    // Header with garbage in num_buffers (ignored on TX) in its own descriptor, frame split
    // over two more.
    let mut hdr = [0u8; 12];
    hdr[10] = 0x55;
    drv.write(BUF_BASE, &hdr);
    drv.write(BUF_BASE + 0x1000, &f[..20]);
    drv.write(BUF_BASE + 0x2000, &f[20..]);
    let head = drv.add(&[
        r(BUF_BASE, 12),
        r(BUF_BASE + 0x1000, 20),
        r(BUF_BASE + 0x2000, 40),
    ]);
    let mut q = drv.queue();
    let (tap, stats, mut out) = setup(false);

    assert_eq!(
        run_tx(
            &mut q,
            &m,
            &mut GuestCompleter::new(&mut out, &stats),
            &stats
        )
        .expect("ok"),
        1
    );
    let mut expect = vec![0u8; 12];
    expect.extend_from_slice(&f);
    assert_eq!(written(&tap), vec![expect]);
    assert_eq!(drv.used(), vec![(head.into(), 0)]);
    let s = stats.snapshot();
    assert_eq!((s.tx_frames, s.tx_bytes, s.tx_bad_chains), (1, 60, 0));
}

#[test]
fn bad_chains_are_consumed_with_len_zero_and_the_next_frame_still_passes() {
    let m = mem();
    let mut drv = Driver::new(&m);
    let good_frame = frame(64, 8);
    let len = put_packet(&drv, BUF_BASE, [0; 12], &good_frame);
    let mut gso = [0u8; 12];
    gso[1] = 1; // GSO_TCPV4 without the feature
    let gso_len = put_packet(&drv, BUF_BASE + 0x1000, gso, &frame(64, 1));
    let mut csum = [0u8; 12];
    csum[0] = 1; // NEEDS_CSUM without the feature
    let csum_len = put_packet(&drv, BUF_BASE + 0x2000, csum, &frame(64, 1));

    let heads = [
        drv.add(&[r(MEM_SIZE + 0x1000, len)]), // entirely outside guest memory
        drv.add(&[r(BUF_BASE, 12), r(MEM_SIZE - 8, 64)]), // straddles the end of memory
        drv.add(&[r(BUF_BASE, len), w(BUF_BASE + 0x5000, 16)]), // writable descriptor on TX
        drv.add(&[r(BUF_BASE, 11)]),           // shorter than the header
        drv.add(&[r(BUF_BASE, 20)]),           // header but no Ethernet header
        drv.add(&[r(BUF_BASE + 0x1000, gso_len)]),
        drv.add(&[r(BUF_BASE + 0x2000, csum_len)]),
        drv.add(&[r(BUF_BASE, 12), r(BUF_BASE + 0x10000, 0x10000)]), // > 64 KiB frame
        drv.add(&[r(BUF_BASE, len)]),                                // good
    ];
    let mut q = drv.queue();
    let (tap, stats, mut out) = setup(false);

    assert_eq!(
        run_tx(
            &mut q,
            &m,
            &mut GuestCompleter::new(&mut out, &stats),
            &stats
        )
        .expect("ok"),
        heads.len()
    );
    let mut expect = vec![0u8; 12];
    expect.extend_from_slice(&good_frame);
    assert_eq!(written(&tap), vec![expect], "only the good frame");
    let used: Vec<(u32, u32)> = heads.iter().map(|&h| (u32::from(h), 0)).collect();
    assert_eq!(drv.used(), used, "every chain completed, in avail order");
    assert_eq!(stats.snapshot().tx_bad_chains, heads.len() as u64 - 1);
}

#[test]
fn looping_chain_is_refused() {
    use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
    use virtio_queue::desc::split::Descriptor;
    let m = mem();
    let mut drv = Driver::new(&m);
    let n = VRING_DESC_F_NEXT as u16;
    // Descriptors 0 -> 1 -> 0 -> ... (the head index is 0 for the first chain).
    let head = drv.add_raw(&[
        Descriptor::new(BUF_BASE, 12, n, 1),
        Descriptor::new(BUF_BASE + 12, 64, n, 0),
    ]);
    let mut q = drv.queue();
    let (tap, stats, mut out) = setup(false);
    assert_eq!(
        run_tx(
            &mut q,
            &m,
            &mut GuestCompleter::new(&mut out, &stats),
            &stats
        )
        .expect("ok"),
        1
    );
    assert!(written(&tap).is_empty());
    assert_eq!(drv.used(), vec![(head.into(), 0)]);
    assert_eq!(stats.snapshot().tx_bad_chains, 1);
}

#[test]
fn tap_refusal_is_counted_and_chain_still_completed() {
    let m = mem();
    let mut drv = Driver::new(&m);
    let len = put_packet(&drv, BUF_BASE, [0; 12], &frame(100, 0));
    let head = drv.add(&[r(BUF_BASE, len)]);
    let mut q = drv.queue();
    let (_tap, stats, mut out) = setup(true);
    assert_eq!(
        run_tx(
            &mut q,
            &m,
            &mut GuestCompleter::new(&mut out, &stats),
            &stats
        )
        .expect("ok"),
        1
    );
    assert_eq!(drv.used(), vec![(head.into(), 0)]);
    let s = stats.snapshot();
    assert_eq!((s.tx_frames, s.tx_tap_errors), (0, 1));
}

#[test]
fn only_chains_available_at_the_start_are_taken() {
    let m = mem();
    let mut drv = Driver::new(&m);
    let len = put_packet(&drv, BUF_BASE, [0; 12], &frame(60, 0));
    drv.add(&[r(BUF_BASE, len)]);
    drv.add(&[r(BUF_BASE, len)]);
    let mut q = drv.queue();
    let produced = pop_tx(&mut q, &m);
    assert_eq!(produced.len(), 2);
    assert!(produced.iter().all(|(c, f)| c.len == 0 && f.is_ok()));
    assert!(pop_tx(&mut q, &m).is_empty());
}
