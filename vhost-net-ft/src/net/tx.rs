//! Transmit path: guest -> frame -> output.
//!
//! Two separate steps:
//! 1. *Produce* ([`pop_tx`]): a TX chain is validated and copied out of guest memory into a
//!    [`TxFrame`] (header checked, then replaced by a clean all-zero header); the chain
//!    becomes a [`Completion`] with length 0, whether the frame was good or refused.
//! 2. *Release* ([`TxOutput::release`]): the frame leaves the VM. [`TapOutput`] writes it to
//!    the TAP at once. The FT NIC will add outputs that hold a frame until the backup has
//!    acknowledged the log position current when it was produced (primary) or drop it
//!    (backup), without changing this module.

use std::io;
use std::sync::Arc;

use log::error;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT};
use vm_memory::GuestMemory;

use crate::error::{ChainError, UsedRingError};
use crate::net::chain::{gather, validate_chain, Direction};
use crate::net::completion::{complete, Completion};
use crate::net::hdr::{split_packet, VirtioNetHdr, ETH_HLEN, MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::net::stats::NetStats;

/// A frame produced by the guest, prefixed with the (clean) header the TAP expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxFrame {
    packet: Vec<u8>,
}

impl TxFrame {
    /// Header and frame as written to the TAP.
    pub fn packet(&self) -> &[u8] {
        &self.packet
    }

    /// The Ethernet frame.
    pub fn frame(&self) -> &[u8] {
        &self.packet[VNET_HDR_LEN..]
    }
}

/// Where produced frames go.
pub trait TxOutput: Send + Sync {
    /// Takes ownership of one frame, in production order.
    fn release(&mut self, frame: TxFrame);
}

/// Something packets can be written to (the TAP; a fake in tests).
pub trait PacketSink: Send + Sync {
    /// Writes one packet (virtio-net header + frame).
    fn write_packet(&self, packet: &[u8]) -> io::Result<()>;
}

impl PacketSink for crate::tap::Tap {
    fn write_packet(&self, packet: &[u8]) -> io::Result<()> {
        crate::tap::Tap::write_packet(self, packet)
    }
}

/// Plain-mode output: every frame is written to the TAP immediately. A frame the TAP refuses
/// (for instance "would block" when its queue is full, or the interface is down) is dropped
/// and counted.
pub struct TapOutput {
    sink: Arc<dyn PacketSink>,
    stats: Arc<NetStats>,
}

impl TapOutput {
    /// An output writing to `sink`.
    pub fn new(sink: Arc<dyn PacketSink>, stats: Arc<NetStats>) -> Self {
        TapOutput { sink, stats }
    }
}

impl TxOutput for TapOutput {
    fn release(&mut self, frame: TxFrame) {
        match self.sink.write_packet(frame.packet()) {
            Ok(()) => {
                NetStats::inc(&self.stats.tx_frames);
                NetStats::add(&self.stats.tx_bytes, frame.frame().len() as u64);
            }
            Err(e) => {
                let n = NetStats::inc(&self.stats.tx_tap_errors);
                if NetStats::sampled(n) {
                    error!(
                        "TX: TAP refused a {}-byte frame, dropped: {e} (#{n})",
                        frame.frame().len()
                    );
                }
            }
        }
    }
}

/// Validates and copies one TX chain.
pub fn read_tx_chain<M: GuestMemory>(
    mem: &M,
    chain: DescriptorChain<&M>,
) -> Result<TxFrame, ChainError> {
    let segs = validate_chain(mem, chain, Direction::DeviceReadable)?;
    let min = VNET_HDR_LEN + ETH_HLEN;
    if segs.total < min {
        return Err(ChainError::TooShort {
            have: segs.total,
            need: min,
        });
    }
    let max = VNET_HDR_LEN + MAX_FRAME_LEN;
    if segs.total > max {
        return Err(ChainError::TooLong {
            have: segs.total,
            max,
        });
    }
    // Validate the copy, not guest memory, so the guest cannot change it after the check.
    let mut packet = gather(mem, &segs)?;
    split_packet(&packet, VirtioNetHdr::check_tx)?;
    packet[..VNET_HDR_LEN].copy_from_slice(&VirtioNetHdr::default().to_bytes());
    Ok(TxFrame { packet })
}

/// Takes every chain that is available now (a later addition comes with a new kick) and
/// returns, in avail order, each chain's completion and its frame or the reason it was
/// refused.
pub fn pop_tx<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
) -> Vec<(Completion, Result<TxFrame, ChainError>)> {
    let chains: Vec<DescriptorChain<&M>> = match queue.iter(mem) {
        Ok(it) => it.collect(),
        Err(e) => {
            error!("TX: cannot read the available ring: {e}");
            return Vec::new();
        }
    };
    chains
        .into_iter()
        .map(|chain| {
            let head = chain.head_index();
            (Completion { head, len: 0 }, read_tx_chain(mem, chain))
        })
        .collect()
}

/// The plain-mode transmit step: release every good frame, complete every chain at once.
/// Returns the number of chains put on the used ring (notify the guest if non-zero).
pub fn run_tx<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    out: &mut dyn TxOutput,
    stats: &NetStats,
) -> Result<usize, UsedRingError> {
    let mut used = 0;
    for (c, frame) in pop_tx(queue, mem) {
        match frame {
            Ok(f) => out.release(f),
            Err(e) => {
                let n = NetStats::inc(&stats.tx_bad_chains);
                if NetStats::sampled(n) {
                    error!(
                        "TX: refusing chain {}: {e}; returned with length 0 (#{n})",
                        c.head
                    );
                }
            }
        }
        complete(queue, mem, c, stats)?;
        used += 1;
    }
    Ok(used)
}

#[cfg(test)]
#[path = "tx_tests.rs"]
mod tests;
