//! Used-ring completions.
//!
//! A [`Completion`] is "chain `head` is done, `len` bytes were written into it". Putting it
//! on the used ring is a write to guest memory, so in FT mode it must happen only at a
//! landmark; keeping it a value (instead of calling `add_used` deep inside the data path)
//! is what lets the FT NIC queue completions and apply them when the VMM says so.

use log::error;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use crate::error::UsedRingError;
use crate::net::stats::NetStats;

/// A finished descriptor chain, to be put on the used ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Head descriptor index of the chain.
    pub head: u16,
    /// Bytes written into the chain by the device (0 for TX and for refused chains).
    pub len: u32,
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
