//! Fault-tolerance ("FT") mode: the backend side of the FT control channel
//! (`ft-control`, docs/PROTOCOL.md "FT control channel").
//!
//! With `--ft-socket PATH` the backend also listens there for the VMM (`ft_backend::FtServer`,
//! shared with vhost-net-ft; [`Ft`] is what it drives). While a VMM that said `Role::Primary`
//! is connected:
//!
//! - completions are not applied by the backend (no guest-memory write, no used-ring
//!   update, no call eventfd) but sent to the VMM as `Completion` messages, which the VMM
//!   applies and logs at a landmark (determinism contract, point 4);
//! - every output (a request that changes or orders the disk, see `blk::output`) is
//!   numbered, announced with `OutputReady` and held in the gate (`ft_backend::Gate`) until the VMM sends a
//!   `Release` covering it (output rule); only then is its NBD command issued.
//!
//! Otherwise (no option, nobody connected, `Role::Live`) the backend is the plain
//! vhost-user backend.
//!
//! How held outputs end:
//! - `Release { id }`: those up to `id` are issued, in id order;
//! - `SetRole { role: Live }` from the connected VMM: all of them are issued at once (the
//!   VMM won the arbiter and decided to go live);
//! - the end of the FT connection, for any reason (EOF, read or write error, garbage):
//!   all of them are *discarded*: their NBD commands are never issued, and no completion is
//!   ever sent or applied for them (logged with `warn!`). A held output is one the backup
//!   has not acknowledged. When the primary VMM goes away (killed, or halted after losing
//!   the arbiter's test-and-set) the backup may go live from an earlier log position, and
//!   its guest may never issue that write, or issue another one to the same sectors: the
//!   disk must then never have seen it (split brain). The survivor re-executes every
//!   request whose completion was never logged, so a request dropped here is redone there
//!   if its guest still wants it; a duplicate is harmless, a leaked write is not.
//!
//! A discarded request never completes, so the vhost-user connection it came from can
//! complete nothing after it (completions are applied in avail order: see
//! `blk::completion::Sequencer::lose`). That connection belongs to the VMM that went away;
//! the next frontend gets a fresh sequencer, and a frontend that stops the ring
//! (`GET_VRING_BASE`) gets it rewound to the used index at once, so the request is handed
//! over again (the ring-resume path).
//!
//! Lock order: gate -> sequencer -> link -> vring. Released outputs run under the gate lock
//! so that they are issued in id order even when releases race with announcements; running
//! one may complete a request synchronously, which takes the sequencer and then the link.
//! Discard actions also run under the gate lock (they take the sequencer).

pub mod link;

use std::sync::{Arc, Mutex, MutexGuard};

use ft_backend::{FtBackend, Gate, VmmConn};
use ft_control::{ControlError, Message, Role};

use crate::metrics::METRICS;

use link::Link;

/// What releasing an output does (issue its NBD command), or discarding it (tell the
/// sequencer that the request will never complete).
pub type Action = Box<dyn FnOnce() + Send>;

/// A held output: exactly one of its two actions is run.
pub struct Held {
    /// The output leaves (released by the VMM, or the VMM went live).
    pub run: Action,
    /// The output never leaves (its FT connection ended first).
    pub discard: Action,
}

/// Process-wide FT state, shared by the FT server and every vhost-user connection.
#[derive(Default)]
pub struct Ft {
    gate: Mutex<Gate<Held>>,
    link: Link,
}

fn run_all(held: Vec<Held>) {
    for h in held {
        (h.run)();
    }
}

fn discard_all(held: Vec<Held>) {
    METRICS
        .ft_outputs_discarded
        .inc_by(u64::try_from(held.len()).unwrap_or(u64::MAX));
    for h in held {
        (h.discard)();
    }
}

impl Ft {
    pub fn new() -> Arc<Ft> {
        Arc::new(Ft::default())
    }

    fn gate(&self) -> MutexGuard<'_, Gate<Held>> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the backend is in FT mode (a `Role::Primary` VMM is connected).
    pub fn is_primary(&self) -> bool {
        self.gate().is_primary()
    }

    /// Submits an output. In plain mode `run(item)` is called at once. In FT mode the
    /// output gets the next id, is announced (`OutputReady` with `digest()`), and exactly one
    /// of two things happens later, in id order: `run(item)` when a `Release` covers it or
    /// the VMM goes live, or `discard()` (and `item` is dropped) when the FT connection ends
    /// first.
    pub fn output<T: Send + 'static>(
        &self,
        queue: u16,
        head: u16,
        item: T,
        digest: impl FnOnce() -> [u8; 32],
        run: impl FnOnce(T) + Send + 'static,
        discard: impl FnOnce() + Send + 'static,
    ) {
        let mut g = self.gate();
        let Some(id) = g.next_id() else {
            // Plain mode. Still under the gate lock: a concurrent switch to plain mode has
            // issued or discarded every held output before we get here, so issue order =
            // id order.
            return run(item);
        };
        METRICS.ft_outputs_held.inc();
        // If this fails the connection is being torn down; its end discards the output.
        self.link.send(&Message::OutputReady {
            id,
            queue,
            head,
            digest: digest(),
        });
        let held = Held {
            run: Box::new(move || run(item)),
            discard: Box::new(discard),
        };
        run_all(g.hold(Some(id), held));
    }

    /// In FT mode, sends the completion built by `make` to the VMM and returns `true`;
    /// `false` means plain mode: the caller applies the completion itself.
    pub fn send_completion(&self, make: impl FnOnce() -> Message) -> bool {
        self.link.send_if_primary(make)
    }
}

/// What the shared FT server (`ft_backend::FtServer`) asks of this backend. The server
/// serves one connection at a time, so a call always concerns the latest connection.
impl FtBackend for Ft {
    /// The mode switches before the answer leaves: a VMM that has the `HelloAck` can rely on
    /// every later completion and output being under FT rules.
    fn attach(&self, conn: VmmConn, role: Role) -> Result<(), ControlError> {
        let mut g = self.gate();
        let primary = role == Role::Primary;
        let mut left = g.connect(primary);
        if !left.is_empty() {
            log::warn!(
                "FT: new connection; discarding {} output(s) still held from the previous \
                 one: their NBD commands are never issued",
                left.len()
            );
        }
        let r = self.link.install(conn, primary);
        if r.is_err() {
            left.extend(g.disconnect());
        }
        discard_all(left);
        r
    }

    fn release(&self, _serial: u64, id: u64) {
        let mut g = self.gate();
        let out = g.release(id);
        log::debug!("FT: release up to {id}: {} output(s) leave", out.len());
        run_all(out);
    }

    fn set_role(&self, _serial: u64, role: Role) {
        let mut g = self.gate();
        let primary = role == Role::Primary;
        let out = g.set_primary(primary);
        self.link.set_primary(primary);
        log::info!(
            "FT: role {role:?}{}",
            match out.len() {
                0 => String::new(),
                n => format!("; releasing {n} held output(s)"),
            }
        );
        run_all(out);
    }

    /// Plain mode; held outputs are discarded, never issued (see the module documentation).
    fn detach(&self, serial: u64, why: &str) {
        let mut g = self.gate();
        if self.link.serial().is_some_and(|s| s != serial) {
            return;
        }
        self.link.clear();
        let discards = g.disconnect();
        if !discards.is_empty() {
            log::warn!(
                "FT connection gone ({why}): discarding {} held output(s) the VMM never \
                 released; their NBD commands are never issued",
                discards.len()
            );
        }
        discard_all(discards);
    }
}
