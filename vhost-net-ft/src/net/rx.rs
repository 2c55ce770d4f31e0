//! Receive path: TAP -> bounce buffer -> guest.
//!
//! Two separate steps:
//! 1. *Arrival* ([`fill_one`]): one packet is read from the TAP, its virtio-net header checked
//!    and replaced by the header the guest gets, and the result kept as an [`RxFrame`] in the
//!    [`RxBounce`] buffer. No guest memory is touched.
//! 2. *Apply* ([`apply_rx_frame`], [`deliver_pending`]): the next available RX chain is taken
//!    and validated, and the oldest frame is handed with it to a [`Completer`]: in plain mode
//!    it is written into the chain and the chain put on the used ring (the caller notifies);
//!    in FT mode the same writes go to the VMM as a completion message instead (determinism
//!    contract: the backend itself never writes guest memory then).
//!
//! In plain mode [`run_rx`] alternates both with a bounce capacity of one: a frame is read only
//! after the previous one found a buffer, and when the guest has no buffer the frame waits in
//! the bounce buffer and the caller stops polling the TAP until the guest kicks the RX queue.

use std::collections::VecDeque;
use std::io;

use log::{debug, error, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use crate::error::{HdrError, UsedRingError};
use crate::net::chain::{validate_chain, Direction};
use crate::net::completion::{Completer, Completion, FinishError, Job};
use crate::net::config::RX_QUEUE_U16;
use crate::net::hdr::{split_packet, VirtioNetHdr, MAX_FRAME_LEN, MIN_RX_CHAIN_LEN, VNET_HDR_LEN};
use crate::net::stats::NetStats;

/// Size of the buffer packets are read into: one byte more than the largest accepted packet,
/// so that a packet filling it completely is recognised as too long.
pub const RX_SCRATCH_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN + 1;
/// Frames handled per event before returning to the event loop (fairness with TX).
pub const RX_BUDGET: usize = 256;

/// Something packets can be read from (the TAP; a fake in tests).
pub trait PacketSource {
    /// Reads one packet (virtio-net header + frame); `WouldBlock` when none is queued.
    fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl PacketSource for crate::tap::Tap {
    fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
        crate::tap::Tap::read_packet(self, buf)
    }
}

/// A frame that arrived from the TAP, already prefixed with the header the guest receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxFrame {
    packet: Vec<u8>,
}

impl RxFrame {
    /// Builds a frame from a TAP packet (header + frame), refusing offloaded packets and bad
    /// lengths.
    pub fn from_tap(packet: &[u8]) -> Result<RxFrame, HdrError> {
        let frame = split_packet(packet, VirtioNetHdr::check_from_tap)?;
        let mut p = Vec::with_capacity(VNET_HDR_LEN + frame.len());
        p.extend_from_slice(&VirtioNetHdr::for_rx().to_bytes());
        p.extend_from_slice(frame);
        Ok(RxFrame { packet: p })
    }

    /// Header and frame as the guest receives them.
    pub fn packet(&self) -> &[u8] {
        &self.packet
    }

    /// The Ethernet frame.
    pub fn frame(&self) -> &[u8] {
        &self.packet[VNET_HDR_LEN..]
    }
}

/// Frames that arrived but are not yet in guest memory (the FT bounce buffer).
#[derive(Debug)]
pub struct RxBounce {
    frames: VecDeque<RxFrame>,
    capacity: usize,
}

impl RxBounce {
    /// A bounce buffer holding at most `capacity` frames (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        RxBounce {
            frames: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Whether no further frame may be read.
    pub fn is_full(&self) -> bool {
        self.frames.len() >= self.capacity
    }

    /// Number of frames waiting.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drops all waiting frames and returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.frames.len();
        self.frames.clear();
        n
    }
}

/// What happened to one frame offered to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// Written into a chain and completed (by the backend or, in FT mode, by the VMM).
    Delivered(Completion),
    /// The guest has no (valid) buffer; the frame must wait.
    NoBuffer,
    /// The frame is larger than the guest's conforming buffer; it was dropped (counted) and
    /// the buffer left for the next frame.
    Dropped,
}

/// Completes a refused RX chain with length 0 (logged, counted).
fn refuse<M: GuestMemory, C: Completer>(
    queue: &mut Queue,
    mem: &M,
    completer: &mut C,
    head: u16,
    why: &dyn std::fmt::Display,
    stats: &NetStats,
) -> Result<(), UsedRingError> {
    let n = NetStats::inc(&stats.rx_bad_chains);
    if NetStats::sampled(n) {
        error!("RX: refusing chain {head}: {why}; returned with length 0 (#{n})");
    }
    let job = Job {
        queue_index: RX_QUEUE_U16,
        head,
        write: None,
        output: None,
    };
    match completer.finish(queue, mem, job) {
        Ok(_) => Ok(()),
        Err(FinishError::Used(e)) => Err(e),
        // Nothing is written for a refused chain, so this cannot happen; if it did, the
        // chain stays unused (the frontend gets it back on reset).
        Err(FinishError::Chain(e)) => {
            error!("RX: cannot return chain {head}: {e}");
            Ok(())
        }
    }
}

/// Writes `frame` into the next valid RX chain through `completer`. Refused chains on the way
/// are completed with length 0 (logged, counted) and the next one is tried.
pub fn apply_rx_frame<M: GuestMemory, C: Completer>(
    queue: &mut Queue,
    mem: &M,
    frame: &RxFrame,
    completer: &mut C,
    stats: &NetStats,
) -> Result<RxOutcome, UsedRingError> {
    let need = frame.packet.len();
    loop {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            return Ok(RxOutcome::NoBuffer);
        };
        let head = chain.head_index();
        let segs = match validate_chain(mem, chain, Direction::DeviceWritable) {
            Ok(s) => s,
            Err(e) => {
                refuse(queue, mem, completer, head, &e, stats)?;
                continue;
            }
        };
        if segs.total < need {
            if segs.total < MIN_RX_CHAIN_LEN {
                let why = format!(
                    "chain too short: {} bytes, a driver without MRG_RXBUF must post {MIN_RX_CHAIN_LEN}",
                    segs.total
                );
                refuse(queue, mem, completer, head, &why, stats)?;
                continue;
            }
            // A conforming buffer, but the frame is larger (TAP MTU above 1500): drop the
            // frame, give the chain back for the next one.
            queue.set_next_avail(queue.next_avail().wrapping_sub(1));
            let n = NetStats::inc(&stats.rx_dropped_bad_length);
            if NetStats::sampled(n) {
                warn!(
                    "RX: dropping {}-byte frame: larger than the guest's {}-byte buffer (#{n})",
                    frame.frame().len(),
                    segs.total - VNET_HDR_LEN
                );
            }
            return Ok(RxOutcome::Dropped);
        }
        let job = Job {
            queue_index: RX_QUEUE_U16,
            head,
            write: Some((&segs, frame.packet())),
            output: None,
        };
        match completer.finish(queue, mem, job) {
            Ok(done) => {
                NetStats::inc(&stats.rx_frames);
                NetStats::add(&stats.rx_bytes, frame.frame().len() as u64);
                return Ok(RxOutcome::Delivered(done.completion));
            }
            Err(FinishError::Used(e)) => return Err(e),
            Err(FinishError::Chain(e)) => refuse(queue, mem, completer, head, &e, stats)?,
        }
    }
}

/// Result of [`deliver_pending`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Frames put on the used ring (the caller must notify if non-zero).
    pub frames: usize,
    /// Chains completed (frames plus refused chains), by the backend or the VMM; whether to
    /// notify is the completer's [`Completer::guest_used`].
    pub used: usize,
    /// The guest ran out of buffers with frames still waiting.
    pub starved: bool,
}

/// Applies waiting frames oldest first until the bounce buffer is empty or the guest has no
/// buffer.
pub fn deliver_pending<M: GuestMemory, C: Completer>(
    bounce: &mut RxBounce,
    queue: &mut Queue,
    mem: &M,
    completer: &mut C,
    stats: &NetStats,
) -> Result<Delivered, UsedRingError> {
    let mut d = Delivered::default();
    let used_before = queue.next_used();
    let result = (|| {
        while let Some(frame) = bounce.frames.front() {
            match apply_rx_frame(queue, mem, frame, completer, stats)? {
                RxOutcome::Delivered(_) => d.frames += 1,
                RxOutcome::Dropped => {}
                RxOutcome::NoBuffer => {
                    d.starved = true;
                    break;
                }
            }
            bounce.frames.pop_front();
        }
        Ok(())
    })();
    d.used = usize::from(queue.next_used().wrapping_sub(used_before));
    result.map(|()| d)
}

/// Result of [`fill_one`].
#[derive(Debug)]
pub enum Fill {
    /// A packet was read (and queued, or refused and counted).
    Read,
    /// Nothing queued on the TAP.
    WouldBlock,
    /// The bounce buffer is full.
    Full,
    /// Reading failed.
    Error(io::Error),
}

/// Reads one packet from `src` into the bounce buffer (the arrival step).
pub fn fill_one(
    bounce: &mut RxBounce,
    src: &dyn PacketSource,
    scratch: &mut [u8],
    stats: &NetStats,
) -> Fill {
    if bounce.is_full() {
        return Fill::Full;
    }
    let n = match src.read_packet(scratch) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Fill::WouldBlock,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Fill::Read,
        Err(e) => {
            NetStats::inc(&stats.rx_tap_errors);
            return Fill::Error(e);
        }
    };
    let len_err = if n >= scratch.len() {
        Some(HdrError::TooLong(n.saturating_sub(VNET_HDR_LEN)))
    } else {
        None
    };
    match len_err.map_or_else(|| RxFrame::from_tap(&scratch[..n]), Err) {
        Ok(f) => bounce.frames.push_back(f),
        Err(e) => {
            let n = match e {
                HdrError::Flags(_) | HdrError::Gso(_) => {
                    NetStats::inc(&stats.rx_dropped_bad_header)
                }
                _ => NetStats::inc(&stats.rx_dropped_bad_length),
            };
            if NetStats::sampled(n) {
                warn!("RX: dropping packet from TAP: {e} (#{n})");
            }
        }
    }
    Fill::Read
}

/// Outcome of [`run_rx`]: whether to keep the TAP in the poll set and whether to notify.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxRun {
    /// Keep polling the TAP (false: the guest has no buffer, wait for an RX kick).
    pub poll_tap: bool,
    /// Chains completed (by the backend or the VMM; see [`Delivered::used`]).
    pub used: usize,
}

/// The plain-mode receive loop: deliver waiting frames, read the next, until the TAP is empty,
/// the guest is out of buffers, or the budget is spent.
pub fn run_rx<M: GuestMemory, C: Completer>(
    bounce: &mut RxBounce,
    src: &dyn PacketSource,
    scratch: &mut [u8],
    queue: &mut Queue,
    mem: &M,
    completer: &mut C,
    stats: &NetStats,
) -> Result<RxRun, UsedRingError> {
    let mut run = RxRun::default();
    for _ in 0..RX_BUDGET {
        let d = deliver_pending(bounce, queue, mem, completer, stats)?;
        run.used += d.used;
        if d.starved {
            NetStats::inc(&stats.rx_no_buffer);
            debug!("RX: no guest buffer, pausing TAP polling until the next RX kick");
            run.poll_tap = false;
            return Ok(run);
        }
        match fill_one(bounce, src, scratch, stats) {
            Fill::Read | Fill::Full => {}
            Fill::WouldBlock => {
                run.poll_tap = true;
                return Ok(run);
            }
            Fill::Error(e) => {
                let n = stats
                    .rx_tap_errors
                    .load(std::sync::atomic::Ordering::Relaxed);
                if NetStats::sampled(n) {
                    error!("RX: reading the TAP failed: {e} (#{n})");
                }
                run.poll_tap = true;
                return Ok(run);
            }
        }
    }
    // Budget spent: deliver what was read last, then come back via the (level-triggered) TAP
    // event.
    let d = deliver_pending(bounce, queue, mem, completer, stats)?;
    run.used += d.used;
    run.poll_tap = !d.starved;
    Ok(run)
}

#[cfg(test)]
#[path = "rx_tests.rs"]
mod tests;
