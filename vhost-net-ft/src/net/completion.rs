//! Finishing descriptor chains: the one place where a chain's result reaches the guest.
//!
//! A [`Completion`] is "chain `head` is done, `len` bytes were written into it". Writing the
//! data and putting the completion on the used ring are writes to guest memory, so in FT mode
//! they must not be done by the backend at all (design brief, determinism contract point 4:
//! the VMM applies them at a landmark, where the backup can reproduce them). The data path
//! therefore never writes guest memory itself: it describes a finished chain as a [`Job`] and
//! hands it to a [`Completer`]:
//! - [`GuestCompleter`] (plain mode) writes the data, releases the TX frame to its output at
//!   once and puts the completion on the used ring;
//! - the FT completer ([`crate::ft::FtCompleter`]) sends the writes and the completion to the
//!   VMM instead; a TX frame is held until the VMM releases it (output rule) and its chain's
//!   completion is sent only after the frame has left. It falls back to [`GuestCompleter`]
//!   whenever no FT primary is connected.
//!
//! Jobs are handed over one chain at a time, in avail order, so completions keep avail order
//! whichever way they go.

use log::error;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use crate::error::{ChainError, UsedRingError};
use crate::net::chain::{scatter, Segments};
use crate::net::stats::NetStats;
use crate::net::tx::{TxFrame, TxOutput};

/// A finished descriptor chain, to be put on the used ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Head descriptor index of the chain.
    pub head: u16,
    /// Bytes written into the chain by the device (0 for TX and for refused chains).
    pub len: u32,
}

/// Everything needed to finish one chain.
#[derive(Debug)]
pub struct Job<'a> {
    /// Virtqueue index (0 RX, 1 TX), as the FT control channel names it.
    pub queue_index: u16,
    /// Head descriptor index of the chain.
    pub head: u16,
    /// Bytes to write back to back into the chain's validated writable segments (an RX
    /// packet); `None` for TX chains and refused chains (used length 0).
    pub write: Option<(&'a Segments, &'a [u8])>,
    /// A frame produced by this chain (TX) that must leave the VM.
    pub output: Option<TxFrame>,
}

/// How a chain was finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The used element (written by the backend, or by the VMM from the FT message).
    pub completion: Completion,
    /// Whether the backend put it on the used ring itself (the guest must be notified).
    pub to_guest: bool,
}

/// Why a chain could not be finished.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// The data could not be written into the chain; nothing was completed, the caller
    /// refuses the chain (completes it with length 0).
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The used ring is unusable.
    #[error(transparent)]
    Used(#[from] UsedRingError),
}

/// Where finished chains go.
pub trait Completer {
    /// Finishes one chain (see [`Job`]); calls come in avail order.
    fn finish<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
        job: Job<'_>,
    ) -> Result<Finished, FinishError>;

    /// Number of chains this completer put on the used ring itself so far (the caller
    /// notifies the guest, through the call eventfd, only if this is non-zero).
    fn guest_used(&self) -> usize;
}

/// Puts one completion on the used ring (in the order of the calls, which is avail order).
pub fn complete<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    c: Completion,
    stats: &NetStats,
) -> Result<(), UsedRingError> {
    queue.add_used(mem, c.head, c.len).map_err(|source| {
        NetStats::inc(&stats.used_ring_errors);
        let e = UsedRingError {
            head: c.head,
            source,
        };
        error!("{e}");
        e
    })
}

/// Plain mode: the backend writes guest memory and the used ring itself and releases TX
/// frames to `out` immediately.
pub struct GuestCompleter<'a> {
    out: Option<&'a mut dyn TxOutput>,
    stats: &'a NetStats,
    used: usize,
}

impl<'a> GuestCompleter<'a> {
    /// A completer releasing TX frames to `out`.
    pub fn new(out: &'a mut dyn TxOutput, stats: &'a NetStats) -> Self {
        GuestCompleter {
            out: Some(out),
            stats,
            used: 0,
        }
    }

    /// A completer for the RX queue, which produces no frames.
    pub fn rx(stats: &'a NetStats) -> Self {
        GuestCompleter {
            out: None,
            stats,
            used: 0,
        }
    }
}

impl Completer for GuestCompleter<'_> {
    fn finish<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
        job: Job<'_>,
    ) -> Result<Finished, FinishError> {
        let len = match job.write {
            Some((segs, data)) => scatter(mem, segs, &[data])?,
            None => 0,
        };
        if let Some(frame) = job.output {
            match self.out.as_deref_mut() {
                Some(out) => out.release(frame),
                // A programming error (an RX completer given a TX frame), not a guest error.
                None => error!("frame of chain {} has no output; dropped", job.head),
            }
        }
        let completion = Completion {
            head: job.head,
            len: u32::try_from(len).unwrap_or(u32::MAX),
        };
        complete(queue, mem, completion, self.stats)?;
        self.used += 1;
        Ok(Finished {
            completion,
            to_guest: true,
        })
    }

    fn guest_used(&self) -> usize {
        self.used
    }
}
