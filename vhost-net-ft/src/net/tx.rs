//! Transmit path: guest -> frame -> output.
//!
//! Two separate steps:
//! 1. *Produce* ([`pop_tx`]): a TX chain is validated and copied out of guest memory into a
//!    [`TxFrame`] (header checked, then replaced by a clean all-zero header); the chain
//!    becomes a [`Completion`] with length 0, whether the frame was good or refused.
//! 2. *Finish* ([`run_tx`]): each chain is handed, with its frame, to a [`Completer`]. In
//!    plain mode the frame is released to a [`TxOutput`] ([`TapOutput`] writes it to the TAP at
//!    once) and the chain put on the used ring. The FT primary instead announces the frame to
//!    the VMM and holds it until the VMM releases it (output rule: nothing leaves before the
//!    backup has the log up to it), and sends the chain's completion to the VMM only right
//!    after the frame has left (so the log never records a TX completion whose frame has not
//!    left; see [`crate::ft`]).

use std::io;
use std::sync::Arc;

use ft_control::digest::chain_digest;
use log::error;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT};
use vm_memory::GuestMemory;

use crate::error::{ChainError, UsedRingError};
use crate::net::chain::{gather, validate_chain, Direction};
use crate::net::completion::{Completer, Completion, FinishError, Job};
use crate::net::config::TX_QUEUE_U16;
use crate::net::hdr::{split_packet, VirtioNetHdr, ETH_HLEN, MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::net::stats::NetStats;

/// A frame produced by the guest, prefixed with the (clean) header the TAP expects.
#[derive(Clone, Debug)]
pub struct TxFrame {
    packet: Vec<u8>,
    /// The chain's descriptors (for the FT output digest, which covers the chain's readable
    /// bytes as the guest wrote them, not the cleaned header).
    descriptors: Vec<Descriptor>,
}

impl TxFrame {
    /// A frame from `header || frame` bytes as the guest wrote them in the chain of
    /// `descriptors` (unchecked; for tests and for [`read_tx_chain`], which checks first).
    pub fn from_guest(
        mut packet: Vec<u8>,
        descriptors: Vec<Descriptor>,
    ) -> Result<TxFrame, ChainError> {
        let have = packet.len();
        let hdr = packet.get_mut(..VNET_HDR_LEN).ok_or(ChainError::TooShort {
            have,
            need: VNET_HDR_LEN,
        })?;
        hdr.copy_from_slice(&VirtioNetHdr::default().to_bytes());
        Ok(TxFrame {
            packet,
            descriptors,
        })
    }

    /// The FT output digest (`ft_control::digest`, the function the backup's check calls):
    /// over the chain's readable bytes, read again from `mem` while the chain is still the
    /// device's (its buffers are the device's until it is used, virtio 1.2 section 2.7). [`read_tx_chain`] has
    /// checked every descriptor and bounded the total, so this fails only if the guest
    /// rewrote its descriptor table meanwhile: then a digest of zeros, which the backup
    /// reports as a divergence (the frame itself is held as any other).
    pub fn digest<M: GuestMemory + ?Sized>(&self, mem: &M) -> [u8; 32] {
        chain_digest(mem, self.descriptors.iter().copied()).unwrap_or_else(|e| {
            error!("TX: output digest: {e}; announced as zeros");
            [0; 32]
        })
    }

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
    let descriptors: Vec<Descriptor> = chain.collect();
    let segs = validate_chain(mem, descriptors.iter().copied(), Direction::DeviceReadable)?;
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
    let packet = gather(mem, &segs)?;
    split_packet(&packet, VirtioNetHdr::check_tx)?;
    TxFrame::from_guest(packet, descriptors)
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

/// The transmit step: hands every available chain, with its frame if it is good, to
/// `completer` (which releases the frame and completes the chain with length 0, or, in FT
/// primary mode, holds both until the frame may leave).
/// Returns the number of chains finished (whether to notify is
/// [`Completer::guest_used`]).
pub fn run_tx<M: GuestMemory, C: Completer>(
    queue: &mut Queue,
    mem: &M,
    completer: &mut C,
    stats: &NetStats,
) -> Result<usize, UsedRingError> {
    let mut used = 0;
    for (c, frame) in pop_tx(queue, mem) {
        let output = match frame {
            Ok(f) => Some(f),
            Err(e) => {
                let n = NetStats::inc(&stats.tx_bad_chains);
                if NetStats::sampled(n) {
                    error!(
                        "TX: refusing chain {}: {e}; returned with length 0 (#{n})",
                        c.head
                    );
                }
                None
            }
        };
        let job = Job {
            queue_index: TX_QUEUE_U16,
            head: c.head,
            write: None,
            output,
        };
        match completer.finish(queue, mem, job) {
            Ok(_) => used += 1,
            Err(FinishError::Used(e)) => return Err(e),
            // Nothing is written into a TX chain, so this cannot happen.
            Err(FinishError::Chain(e)) => error!("TX: cannot complete chain {}: {e}", c.head),
        }
    }
    Ok(used)
}

#[cfg(test)]
#[path = "tx_tests.rs"]
mod tests;
