//! The output gate: numbering, holding, releasing and discarding outputs. Pure bookkeeping
//! (no I/O, no locking, no threads); each backend keeps one behind its own lock and does what
//! the gate hands back: send a frame to the TAP, issue an NBD command, or drop it.
//!
//! Output rule (docs/design-brief.md, "Replication"): an output may leave only once the VMM
//! says the backup has the log up to it. `Release { id }` covers every output with an id up
//! to `id`, including outputs announced later (the VMM only promises that everything up to
//! `id` may leave). Outputs are numbered 1, 2, 3, ... per FT connection, in the order they
//! are announced, and leave in that order.
//!
//! Besides outputs the gate holds *followers*: items without an id that must not overtake
//! the items held before them (vhost-net-ft: the completion of a refused TX chain waits
//! behind the held frames of its queue, so the VMM gets a queue's completions in chain
//! order). A follower leaves as soon as everything before it has left.
//!
//! How held items end:
//! - [`Gate::release`]: those up to the id leave, in order;
//! - [`Gate::set_primary`]`(false)` (`SetRole { Live }`: the VMM won the arbiter and goes
//!   live): all of them leave at once;
//! - [`Gate::disconnect`] (the FT connection ended, for any reason): all of them are
//!   *discarded*, never run. A held output is one the backup has not acknowledged; once its
//!   VMM is gone (killed, or halted after losing the arbiter's test-and-set) the backup may go
//!   live from an earlier log position, and the world must never see an output that the
//!   surviving execution did not produce. The survivor re-executes: a request that was never
//!   completed in its log is redone if its guest still wants it. A duplicate is harmless, a
//!   leaked output is not.

use std::collections::VecDeque;

/// One held item: an output (with its id) or a follower.
struct Entry<T> {
    id: Option<u64>,
    item: T,
}

/// Held items and the numbering state of the current FT connection.
pub struct Gate<T> {
    /// FT mode (`Role::Primary`): outputs are numbered and held.
    primary: bool,
    /// Id of the next output.
    next_id: u64,
    /// Every id up to this one has been released.
    released: u64,
    /// Held items, in the order they were held (their outputs in id order).
    held: VecDeque<Entry<T>>,
}

impl<T> Default for Gate<T> {
    fn default() -> Self {
        Gate {
            primary: false,
            next_id: 1,
            released: 0,
            held: VecDeque::new(),
        }
    }
}

impl<T> Gate<T> {
    /// Whether outputs are held (FT mode).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Number of outputs held (followers not counted).
    pub fn held_outputs(&self) -> usize {
        self.held.iter().filter(|e| e.id.is_some()).count()
    }

    /// Number of items held, followers included.
    pub fn held_items(&self) -> usize {
        self.held.len()
    }

    /// The held items, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.held.iter().map(|e| &e.item)
    }

    /// The ids of the held outputs, in order (for logs).
    pub fn held_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.held.iter().filter_map(|e| e.id)
    }

    /// A new FT connection with the given role: ids restart at 1. Returns whatever was still
    /// held (normally nothing: the previous connection's end discarded it), to be discarded.
    pub fn connect(&mut self, primary: bool) -> Vec<T> {
        let left = self.disconnect();
        *self = Gate {
            primary,
            ..Gate::default()
        };
        left
    }

    /// The FT connection ended: plain mode, and every held item is returned, in order, to be
    /// *discarded* (see the module documentation).
    pub fn disconnect(&mut self) -> Vec<T> {
        self.primary = false;
        self.released = self.released.max(self.next_id - 1);
        self.held.drain(..).map(|e| e.item).collect()
    }

    /// `SetRole`. Leaving FT mode lets every held item leave (the VMM decided to go live:
    /// there is no backup to wait for any more); they are returned in order, to be run now.
    pub fn set_primary(&mut self, primary: bool) -> Vec<T> {
        self.primary = primary;
        if primary {
            return Vec::new();
        }
        // Everything announced so far counts as released: a later `Release` for one of these
        // ids is then a no-op rather than a reason to hold anything.
        self.released = self.released.max(self.next_id - 1);
        self.held.drain(..).map(|e| e.item).collect()
    }

    /// Numbers a new output, or `None` in plain mode (it leaves at once, unannounced).
    pub fn next_id(&mut self) -> Option<u64> {
        if !self.primary {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        Some(id)
    }

    /// Holds `item`: output `id` (just numbered by [`Gate::next_id`] and announced) or, with
    /// `None`, a follower. Returns the items that may leave now, in order: this one too if a
    /// release already covers it (a `Release` may arrive ahead of the announcement) and
    /// nothing before it is still held.
    pub fn hold(&mut self, id: Option<u64>, item: T) -> Vec<T> {
        self.held.push_back(Entry { id, item });
        self.ready()
    }

    /// `Release { id: upto }`: returns every held item that may now leave, in order.
    pub fn release(&mut self, upto: u64) -> Vec<T> {
        self.released = self.released.max(upto);
        self.ready()
    }

    /// Takes the released items off the front: outputs up to `released`, and the followers
    /// between them.
    fn ready(&mut self) -> Vec<T> {
        let n = self
            .held
            .iter()
            .take_while(|e| e.id.is_none_or(|id| id <= self.released))
            .count();
        self.held.drain(..n).map(|e| e.item).collect()
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
