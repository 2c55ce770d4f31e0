//! Fault-tolerance ("FT") mode: the backend side of the FT control channel
//! (`ft-control`, docs/PROTOCOL.md "FT control channel").
//!
//! With `--ft-socket PATH` the backend also listens there for the VMM ([`server`]). While a
//! VMM that said `Role::Primary` is connected:
//!
//! - completions are not applied by the backend (no guest-memory write, no used-ring
//!   update, no call eventfd) but sent to the VMM as `Completion` messages, which the VMM
//!   applies and logs at a landmark (determinism contract, point 4);
//! - every output (a request that changes or orders the disk, see `blk::output`) is
//!   numbered, announced with `OutputReady` and held in the [`gate`] until the VMM sends a
//!   `Release` covering it (output rule); only then is its NBD command issued.
//!
//! Otherwise (no option, nobody connected, `Role::Live`) the backend is the plain
//! vhost-user backend.
//!
//! Lock order: gate -> sequencer -> link -> vring. Released outputs run under the gate lock
//! so that they are issued in id order even when releases race with announcements; running
//! one may complete a request synchronously, which takes the sequencer and then the link.

pub mod gate;
pub mod link;
pub mod server;

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use ft_control::{Message, Role};

use gate::{Action, Gate};
use link::Link;

/// Process-wide FT state, shared by the FT server and every vhost-user connection.
#[derive(Default)]
pub struct Ft {
    gate: Mutex<Gate>,
    link: Link,
}

fn run_all(actions: Vec<Action>) {
    for a in actions {
        a();
    }
}

impl Ft {
    pub fn new() -> Arc<Ft> {
        Arc::new(Ft::default())
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the backend is in FT mode (a `Role::Primary` VMM is connected).
    pub fn is_primary(&self) -> bool {
        self.gate().is_primary()
    }

    /// Submits an output. In plain mode `run(item)` is called at once. In FT mode the
    /// output gets the next id, is announced (`OutputReady` with `digest(&item)`), and
    /// `run(item)` is called when a `Release` covers it, the VMM goes live, or the FT
    /// connection ends, in id order.
    pub fn output<T: Send + 'static>(
        &self,
        queue: u16,
        head: u16,
        item: T,
        digest: impl FnOnce(&T) -> [u8; 32],
        run: impl FnOnce(T) + Send + 'static,
    ) {
        let mut g = self.gate();
        let Some(id) = g.next_id() else {
            // Plain mode. Still under the gate lock: a concurrent switch to plain mode has
            // issued every held output before we get here, so issue order = id order.
            return run(item);
        };
        let digest = digest(&item);
        // If this fails the connection is being torn down; its end releases the output.
        self.link.send(&Message::OutputReady {
            id,
            queue,
            head,
            digest,
        });
        if let Some(now) = g.hold(id, Box::new(move || run(item))) {
            now();
        }
    }

    /// In FT mode, sends the completion built by `make` to the VMM and returns `true`;
    /// `false` means plain mode: the caller applies the completion itself.
    pub fn send_completion(&self, make: impl FnOnce() -> Message) -> bool {
        self.link.send_if_primary(make)
    }

    /// `Release { id }` from the VMM.
    pub fn release(&self, id: u64) {
        let mut g = self.gate();
        let actions = g.release(id);
        log::debug!("FT: release up to {id}: {} output(s) leave", actions.len());
        run_all(actions);
    }

    /// `SetRole` from the VMM.
    pub fn set_role(&self, role: Role) {
        let mut g = self.gate();
        let primary = role == Role::Primary;
        let actions = g.set_primary(primary);
        self.link.set_primary(primary);
        log::info!(
            "FT: role {role:?}{}",
            match actions.len() {
                0 => String::new(),
                n => format!("; releasing {n} held output(s)"),
            }
        );
        run_all(actions);
    }

    /// A VMM sent a valid `Hello`; `writer` is a clone of its stream, `ack` the encoded
    /// `HelloAck`. The mode switches before the ack leaves: a VMM that has the ack can rely
    /// on every later completion and output being under FT rules.
    pub fn connected(&self, writer: UnixStream, role: Role, ack: &[u8]) -> io::Result<()> {
        let mut g = self.gate();
        let primary = role == Role::Primary;
        let left = g.connect(primary);
        let r = self.link.install(writer, primary, ack);
        if r.is_err() {
            g.set_primary(false);
        }
        run_all(left);
        r
    }

    /// The FT connection ended: plain mode; held outputs leave now (the VMM is gone or has
    /// gone live).
    pub fn disconnected(&self) {
        let mut g = self.gate();
        self.link.clear();
        let actions = g.set_primary(false);
        if !actions.is_empty() {
            log::warn!(
                "FT connection gone with {} output(s) held; releasing them",
                actions.len()
            );
        }
        run_all(actions);
    }
}
