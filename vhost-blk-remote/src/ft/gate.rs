//! The output gate: numbering, holding and releasing outputs. Pure bookkeeping (no I/O, no
//! locking); [`super::Ft`] wraps it in a mutex and runs the actions it hands back.
//!
//! Output rule: an output may leave only once the VMM says the backup has the log up to it
//! (`Release { id }` covers every output with a smaller or equal id). Outputs are numbered
//! 1, 2, 3, ... per FT connection in the order they are announced (avail order, since the
//! vring worker announces them while walking the popped chains), and leave in that order.

use std::collections::VecDeque;

/// What releasing an output does (for blk: issue its NBD command).
pub type Action = Box<dyn FnOnce() + Send>;

/// Held outputs and the numbering state of the current FT connection.
pub struct Gate {
    /// FT mode (`Role::Primary`): outputs are announced and held.
    primary: bool,
    /// Id of the next output announced.
    next_id: u64,
    /// Every id up to this one has been released by the VMM.
    released: u64,
    /// Announced, not yet released, in id order.
    held: VecDeque<(u64, Action)>,
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

    /// A new FT connection: ids restart at 1. Returns whatever was still held (normally
    /// nothing: the previous connection's end released it), to be run now.
    pub fn connect(&mut self, primary: bool) -> Vec<Action> {
        let left = self.set_primary(false);
        *self = Gate {
            primary,
            ..Gate::default()
        };
        left
    }

    /// Switches role. Leaving FT mode releases every held output at once (a VMM that goes
    /// live, or is gone, no longer has a backup to wait for); the actions are returned in id
    /// order, to be run now.
    pub fn set_primary(&mut self, primary: bool) -> Vec<Action> {
        self.primary = primary;
        if primary {
            return Vec::new();
        }
        // Everything announced so far counts as released: a later `Release` for one of
        // these ids is then a no-op rather than a reason to hold anything.
        self.released = self.released.max(self.next_id - 1);
        self.held.drain(..).map(|(_, a)| a).collect()
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

    /// Holds output `id` (just numbered by [`Gate::next_id`]); gives `run` back if the VMM
    /// has already released that id (a `Release` ahead of the announcement).
    pub fn hold(&mut self, id: u64, run: Action) -> Option<Action> {
        if id <= self.released && self.held.is_empty() {
            return Some(run);
        }
        self.held.push_back((id, run));
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
            if let Some((_, a)) = self.held.pop_front() {
                out.push(a);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recorder() -> (Arc<Mutex<Vec<u64>>>, impl Fn(u64) -> Action) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        (log, move |n| {
            let l = l.clone();
            Box::new(move || l.lock().unwrap().push(n)) as Action
        })
    }

    fn run(v: Vec<Action>) {
        v.into_iter().for_each(|a| a());
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
        assert_eq!(*log.lock().unwrap(), vec![1, 2]);
        run(g.release(1)); // going backwards changes nothing
        assert_eq!(g.held(), 2);
        run(g.release(4));
        assert_eq!(*log.lock().unwrap(), vec![1, 2, 3, 4]);
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
        assert_eq!(*log.lock().unwrap(), vec![1, 2]);
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
        assert_eq!(*log.lock().unwrap(), vec![1, 2, 3]);
        assert_eq!(g.next_id(), None);
        g.set_primary(true);
        let id = g.next_id().unwrap();
        assert_eq!(id, 4);
        assert!(g.hold(id, act(id)).is_none(), "held again in FT mode");
        // A new connection releases what was held and restarts the numbering.
        run(g.connect(true));
        assert_eq!(*log.lock().unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(g.next_id(), Some(1));
    }
}
