//! The output gate: numbering, holding, releasing and discarding outputs. Pure bookkeeping
//! (no I/O, no locking); [`super::Ft`] wraps it in a mutex and runs the actions it hands
//! back.
//!
//! Output rule: an output may leave only once the VMM says the backup has the log up to it
//! (`Release { id }` covers every output with a smaller or equal id). Outputs are numbered
//! 1, 2, 3, ... per FT connection in the order they are announced (avail order, since the
//! vring worker announces them while walking the popped chains), and leave in that order.
//! `SetRole { Live }` lets every held output leave; the end of the FT connection discards
//! them instead (see [`Gate::disconnect`]).

use std::collections::VecDeque;

/// What releasing an output does (for blk: issue its NBD command), or what discarding it
/// does (for blk: tell the sequencer that the request will never complete).
pub type Action = Box<dyn FnOnce() + Send>;

/// A held output: exactly one of its two actions is run.
pub struct Held {
    /// The output leaves (released by the VMM, or the VMM went live).
    pub run: Action,
    /// The output never leaves (its FT connection ended first).
    pub discard: Action,
}

/// Held outputs and the numbering state of the current FT connection.
pub struct Gate {
    /// FT mode (`Role::Primary`): outputs are announced and held.
    primary: bool,
    /// Id of the next output announced.
    next_id: u64,
    /// Every id up to this one has been released by the VMM.
    released: u64,
    /// Announced, not yet released, in id order.
    held: VecDeque<(u64, Held)>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            primary: false,
            next_id: 1,
            released: 0,
            held: VecDeque::new(),
        }
    }
}

impl Gate {
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Number of outputs held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// A new FT connection: ids restart at 1. Returns the discard actions of whatever was
    /// still held (normally nothing: the previous connection's end discarded it), to be run
    /// now.
    pub fn connect(&mut self, primary: bool) -> Vec<Action> {
        let left = self.disconnect();
        *self = Gate {
            primary,
            ..Gate::default()
        };
        left
    }

    /// The FT connection ended (EOF, error, garbage): plain mode, and every held output is
    /// *discarded*. A held output is one the backup has not acknowledged; once its VMM is
    /// gone (killed, or halted after losing the arbiter's test-and-set) the backup may go
    /// live from an earlier log position and re-execute, so the output must never leave.
    /// Returns the discard actions in id order, to be run now.
    pub fn disconnect(&mut self) -> Vec<Action> {
        self.primary = false;
        self.released = self.released.max(self.next_id - 1);
        self.held.drain(..).map(|(_, h)| h.discard).collect()
    }

    /// Switches role (`SetRole`). Leaving FT mode releases every held output at once (the
    /// VMM has decided to go live: there is no backup to wait for any more); the run actions
    /// are returned in id order, to be run now.
    pub fn set_primary(&mut self, primary: bool) -> Vec<Action> {
        self.primary = primary;
        if primary {
            return Vec::new();
        }
        // Everything announced so far counts as released: a later `Release` for one of
        // these ids is then a no-op rather than a reason to hold anything.
        self.released = self.released.max(self.next_id - 1);
        self.held.drain(..).map(|(_, h)| h.run).collect()
    }

    /// Numbers a new output, or `None` in plain mode (run it at once, unannounced).
    pub fn next_id(&mut self) -> Option<u64> {
        if !self.primary {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        Some(id)
    }

    /// Holds output `id` (just numbered by [`Gate::next_id`]); gives its run action back if
    /// the VMM has already released that id (a `Release` ahead of the announcement).
    pub fn hold(&mut self, id: u64, out: Held) -> Option<Action> {
        if id <= self.released && self.held.is_empty() {
            return Some(out.run);
        }
        self.held.push_back((id, out));
        None
    }

    /// `Release { id: upto }`: returns the actions of every held output with an id up to
    /// `upto`, in id order.
    pub fn release(&mut self, upto: u64) -> Vec<Action> {
        self.released = self.released.max(upto);
        let mut out = Vec::new();
        while self
            .held
            .front()
            .is_some_and(|(id, _)| *id <= self.released)
        {
            if let Some((_, h)) = self.held.pop_front() {
                out.push(h.run);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Log = Arc<Mutex<Vec<String>>>;

    /// Held outputs that record "run N" or "discard N".
    fn recorder() -> (Log, impl Fn(u64) -> Held) {
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        (log, move |n| {
            let (a, b) = (l.clone(), l.clone());
            Held {
                run: Box::new(move || a.lock().unwrap().push(format!("run {n}"))),
                discard: Box::new(move || b.lock().unwrap().push(format!("discard {n}"))),
            }
        })
    }

    fn run(v: Vec<Action>) {
        v.into_iter().for_each(|a| a());
    }

    fn seen(log: &Log) -> Vec<String> {
        log.lock().unwrap().clone()
    }

    #[test]
    fn plain_mode_numbers_nothing() {
        let mut g = Gate::default();
        assert_eq!(g.next_id(), None);
    }

    #[test]
    fn outputs_are_numbered_held_and_released_in_order() {
        let (log, act) = recorder();
        let mut g = Gate::default();
        assert!(g.connect(true).is_empty());
        for n in 1..=4 {
            let id = g.next_id().unwrap();
            assert_eq!(id, n);
            assert!(g.hold(id, act(id)).is_none());
        }
        run(g.release(2));
        assert_eq!(seen(&log), ["run 1", "run 2"]);
        run(g.release(1)); // going backwards changes nothing
        assert_eq!(g.held(), 2);
        run(g.release(4));
        assert_eq!(seen(&log), ["run 1", "run 2", "run 3", "run 4"]);
        assert_eq!(g.held(), 0);
    }

    #[test]
    fn a_release_ahead_of_the_announcement_lets_the_output_go_at_once() {
        let (log, act) = recorder();
        let mut g = Gate::default();
        g.connect(true);
        run(g.release(2));
        let id = g.next_id().unwrap();
        let r = g.hold(id, act(id));
        assert!(r.is_some());
        run(r.into_iter().collect());
        let id = g.next_id().unwrap();
        run(g.hold(id, act(id)).into_iter().collect());
        let id = g.next_id().unwrap();
        assert_eq!(id, 3);
        assert!(g.hold(id, act(id)).is_none());
        assert_eq!(seen(&log), ["run 1", "run 2"]);
    }

    #[test]
    fn going_live_releases_everything_and_ids_continue() {
        let (log, act) = recorder();
        let mut g = Gate::default();
        g.connect(true);
        for _ in 0..3 {
            let id = g.next_id().unwrap();
            g.hold(id, act(id));
        }
        run(g.set_primary(false));
        assert_eq!(seen(&log), ["run 1", "run 2", "run 3"]);
        assert_eq!(g.next_id(), None);
        g.set_primary(true);
        let id = g.next_id().unwrap();
        assert_eq!(id, 4);
        assert!(g.hold(id, act(id)).is_none(), "held again in FT mode");
        // A new connection discards what was still held and restarts the numbering.
        run(g.connect(true));
        assert_eq!(seen(&log), ["run 1", "run 2", "run 3", "discard 4"]);
        assert_eq!(g.next_id(), Some(1));
    }

    #[test]
    fn the_end_of_the_connection_discards_held_outputs_and_never_runs_them() {
        let (log, act) = recorder();
        let mut g = Gate::default();
        g.connect(true);
        for _ in 0..3 {
            let id = g.next_id().unwrap();
            g.hold(id, act(id));
        }
        run(g.release(1));
        run(g.disconnect());
        assert_eq!(seen(&log), ["run 1", "discard 2", "discard 3"]);
        assert_eq!(g.held(), 0);
        assert!(!g.is_primary());
        // A late Release or SetRole(Live) finds nothing to run; plain mode numbers nothing.
        run(g.release(3));
        run(g.set_primary(false));
        assert_eq!(g.next_id(), None);
        assert_eq!(seen(&log).len(), 3);
    }
}
