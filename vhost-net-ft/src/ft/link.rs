//! The state shared by the FT control connection (reader thread) and the data path (the
//! vhost-user worker thread): the connection and its role, the output numbering and the
//! held TX chains.
//!
//! Everything is behind one mutex, and every decision the data path makes for one chain
//! (hold its frame and completion or let them go, complete it in guest memory or send the
//! completion) is taken under it. So a `Release` or `SetRole` from the VMM is applied between
//! two chains, never in the middle of one, and frames leave the TAP in production order
//! whichever thread writes them.
//!
//! In FT primary mode a TX chain is *held* with its frame: its `Completion` is sent to the
//! VMM only right after the frame has been written to the TAP, by whichever thread lets it
//! leave (the worker when a `Release` already covers it, the reader thread on `Release` or
//! `SetRole { Live }`). The VMM logs a completion when it applies it, so the backup's log
//! never says "sent" for a frame that has not left: a backup that goes live either knows the
//! frame left or finds the chain still pending and sends it again (a duplicate at worst). A
//! chain without a frame (refused) waits behind the held chains of its queue, so the VMM
//! gets the completions of a queue in chain order, the order in which it fills the used ring.
//!
//! How held chains end: `Release { id }` lets them leave up to `id`, `SetRole { Live }` lets
//! all of them leave (the VMM that won the arbiter decided so); each frame is followed by its
//! chain's completion. The end of the connection (EOF, error, garbage, a failed send,
//! replacement by a new `Hello`) *discards* them: the frames are never written and the chains
//! never completed. A held frame is one the backup has not acknowledged, and once its VMM is
//! gone the backup may go live from an earlier log position, where the guest never sent it
//! (or sends something else). The survivor re-executes (its backend starts the TX ring at
//! the used index, so it sends the frame of a chain that was never completed); a frame that
//! was never sent is at worst a delay, a frame that leaked cannot be taken back.
//!
//! Lock order: vring (the worker holds its queue) -> link. The reader thread takes only the
//! link lock and never touches a queue: the completions it sends are counted in the chain's
//! [`VmmSlots`], which the worker adds to its queue's next used index under the link lock.
//! Messages to the VMM are written under the link lock (at most `ft_backend`'s
//! `FT_WRITE_TIMEOUT` each); the VMM reads its FT socket on a thread of its own that never
//! waits for the backend. The numbering and the hold/release/discard rules are
//! `ft_backend::Gate`'s; this module adds what is the NIC's own: frames go to the TAP, and a
//! chain's completion follows its frame.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ft_backend::{FtBackend, Gate, VmmConn};
use ft_control::{ControlError, Message, Role};
use log::{info, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use crate::net::stats::NetStats;
use crate::net::tx::{PacketSink, TapOutput, TxFrame, TxOutput};

/// Used-ring slots of one queue (of one frontend connection) that the VMM fills: completions
/// sent to the VMM for chains of that queue, not yet counted in the queue's next used index.
///
/// The VMM writes each completion it applies into the next slot of the used ring, so the
/// backend counts those slots as if it had filled them itself: after a switch to plain mode
/// its own used elements go after the VMM's. A held TX chain is completed when its frame
/// leaves, possibly on the FT reader thread, which has no access to the queue; the count
/// waits here until the worker adds it ([`VmmSlots::count_in`], under the link lock). A
/// discarded chain is never completed, so it takes no slot.
#[derive(Debug, Default)]
pub struct VmmSlots(AtomicU16);

impl VmmSlots {
    /// Counts one completion sent to the VMM.
    fn add_one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the completions sent since the last call (ring indices wrap at 2^16).
    fn take(&self) -> u16 {
        self.0.swap(0, Ordering::Relaxed)
    }

    /// Adds the completions sent since the last call to `queue`'s next used index.
    pub fn count_in(&self, queue: &mut Queue) {
        let n = self.take();
        if n != 0 {
            queue.set_next_used(queue.next_used().wrapping_add(n));
        }
    }
}

/// A chain whose completion waits for its frame, or for the frames before it, to leave.
struct Held {
    /// Its frame. `None`: a chain without frame (refused), waiting only for the held chains
    /// of its queue before it (a follower, in the gate's terms).
    frame: Option<TxFrame>,
    /// Virtqueue index.
    queue: u16,
    /// Its `Completion` message, sent once the frame has left.
    completion: Message,
    /// Where the slot the completion takes is counted.
    slots: Arc<VmmSlots>,
}

/// Mutable link state (see the module documentation).
pub(crate) struct State {
    conn: Option<VmmConn>,
    /// Held chains, in chain order (their outputs in id order), and the numbering.
    gate: Gate<Held>,
    /// Where frames go when they leave (the TAP).
    pub(crate) out: TapOutput,
    stats: Arc<NetStats>,
}

/// The FT link of the process (one per backend process, shared by the successive frontend
/// connections and FT connections).
pub struct FtLink {
    state: Mutex<State>,
    pub(crate) stats: Arc<NetStats>,
}

impl FtLink {
    /// A link whose released frames go to `sink`; no VMM attached (plain mode).
    pub fn new(sink: Arc<dyn PacketSink>, stats: Arc<NetStats>) -> Self {
        FtLink {
            state: Mutex::new(State {
                conn: None,
                gate: Gate::default(),
                out: TapOutput::new(sink, stats.clone()),
                stats: stats.clone(),
            }),
            stats,
        }
    }

    /// Locks the state. A panic elsewhere cannot leave it inconsistent in a way that matters
    /// more than stopping the NIC would, so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current role: `Live` when no VMM is attached.
    pub fn role(&self) -> Role {
        let st = self.lock();
        if st.is_primary() {
            Role::Primary
        } else {
            Role::Live
        }
    }

    /// Number of outputs (frames) waiting for `Release`.
    pub fn held(&self) -> usize {
        self.lock().gate.held_outputs()
    }

    /// Number of chains whose completion waits (held frames and the chains behind them).
    pub fn held_chains(&self) -> usize {
        self.lock().gate.held_items()
    }
}

/// What the shared FT server asks of the NIC.
impl FtBackend for FtLink {
    /// The answer is sent under the lock, after the switch: every chain the backend completed
    /// itself was completed before the VMM sees `HelloAck`, and everything after it follows
    /// `role`.
    fn attach(&self, conn: VmmConn, role: Role) -> Result<(), ControlError> {
        let mut st = self.lock();
        st.drop_conn("replaced by a new FT connection");
        st.gate.connect(role == Role::Primary);
        let conn = st.conn.insert(conn);
        if let Err(e) = conn.greet() {
            st.drop_conn("the handshake answer could not be sent");
            return Err(e);
        }
        NetStats::inc(&self.stats.ft_connections);
        Ok(())
    }

    /// Outputs up to `id` leave, in id order, each followed by its chain's completion.
    fn release(&self, serial: u64, id: u64) {
        let mut st = self.lock();
        if st.serial() != Some(serial) {
            return;
        }
        for h in st.gate.release(id) {
            st.leave(h);
        }
    }

    /// `Live`: plain mode, held outputs leave at once (and their chains are completed,
    /// through this connection, as on `Release`). `Primary`: completions go to the VMM and
    /// outputs are held from the next chain on.
    fn set_role(&self, serial: u64, role: Role) {
        let mut st = self.lock();
        if st.serial() != Some(serial) {
            return;
        }
        info!("FT connection {serial}: role {role:?}");
        let out = st.gate.set_primary(role == Role::Primary);
        if !out.is_empty() {
            info!(
                "FT: releasing {} held chain(s) and their output(s): role set to Live",
                out.len()
            );
        }
        for h in out {
            st.leave(h);
        }
    }

    /// Its held outputs are discarded, never sent (the VMM that held them is gone: see the
    /// module documentation), and the link is back in plain mode.
    fn detach(&self, serial: u64, why: &str) {
        let mut st = self.lock();
        if st.serial() == Some(serial) {
            info!("FT connection {serial}: detached ({why}); plain mode");
            st.drop_conn(why);
        }
    }

    fn bad_connection(&self) {
        NetStats::inc(&self.stats.ft_bad_connections);
    }
}

impl State {
    fn serial(&self) -> Option<u64> {
        self.conn.as_ref().map(VmmConn::serial)
    }

    /// Whether completions go to the VMM and outputs are held.
    pub(crate) fn is_primary(&self) -> bool {
        self.conn.is_some() && self.gate.is_primary()
    }

    /// Whether a chain of `queue` must wait behind held chains (its completion must not
    /// overtake theirs).
    pub(crate) fn holds(&self, queue: u16) -> bool {
        self.gate.iter().any(|h| h.queue == queue)
    }

    /// Sends one message to the attached VMM. On failure the connection is dropped (held
    /// chains discarded, back to plain mode) and the error returned; the caller then does
    /// the plain-mode thing.
    pub(crate) fn send(&mut self, msg: &Message) -> Result<(), ControlError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(ControlError::Io(std::io::ErrorKind::NotConnected.into()));
        };
        let result = conn.send(msg);
        if result.is_err() {
            NetStats::inc(&self.stats.ft_bad_connections);
            self.drop_conn("sending failed");
        }
        result
    }

    /// FT primary mode: takes charge of a chain of `queue` whose completion must wait, with
    /// its frame if it has one (output rule). The frame is numbered, announced with its
    /// digest (over the chain in `mem`) and held until the VMM releases its id; `completion`
    /// is sent right after the frame has left (possibly at once, if a release already
    /// covers it). A chain without frame waits for the held chains before it.
    ///
    /// If announcing fails, the connection is gone and the chain is discarded with the other
    /// held ones (produced while an FT primary was attached, acknowledged by nobody): its
    /// frame is never sent, its completion never sent or applied. Returns the frame back,
    /// untouched, if the link is not in FT primary mode (the caller completes in plain mode).
    pub(crate) fn hold<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        queue: u16,
        head: u16,
        frame: Option<TxFrame>,
        completion: Message,
        slots: &Arc<VmmSlots>,
    ) -> Result<(), Option<TxFrame>> {
        if !self.is_primary() {
            return Err(frame);
        }
        let mut held = Held {
            frame: None,
            queue,
            completion,
            slots: slots.clone(),
        };
        let id = match frame {
            None => None,
            Some(f) => {
                let Some(id) = self.gate.next_id() else {
                    return Err(Some(f));
                };
                let announce = Message::OutputReady {
                    id,
                    queue,
                    head,
                    digest: f.digest(mem),
                };
                if self.send(&announce).is_err() {
                    NetStats::inc(&self.stats.ft_outputs_discarded);
                    warn!("FT: output {id} could not be announced; discarded, never sent");
                    return Ok(());
                }
                NetStats::inc(&self.stats.ft_outputs);
                held.frame = Some(f);
                Some(id)
            }
        };
        // A release may already cover it (or, for a chain without frame, everything before
        // it may have left already).
        for h in self.gate.hold(id, held) {
            self.leave(h);
        }
        Ok(())
    }

    /// One held chain goes: its frame is written to the TAP (a frame the TAP refuses is
    /// dropped and counted, as in plain mode: an ordinary packet loss), then its completion
    /// is sent to the VMM, exactly once. If the connection is gone meanwhile (a send failed),
    /// the completion is not sent: the VMM that would apply it is gone.
    fn leave(&mut self, h: Held) {
        if let Some(frame) = h.frame {
            self.out.release(frame);
        }
        if self.conn.is_some() && self.send(&h.completion).is_ok() {
            NetStats::inc(&self.stats.ft_completions);
            h.slots.add_one();
        }
    }

    /// Drops the connection (if any; dropping it shuts it down, which wakes its reader up)
    /// and discards everything held: those frames never reach the TAP and those chains are
    /// never completed (see the module documentation).
    fn drop_conn(&mut self, why: &str) {
        let serial = self.conn.take().map(|c| c.serial());
        let ids: Vec<u64> = self.gate.held_ids().collect();
        let chains = self.gate.disconnect().len();
        if chains == 0 {
            return;
        }
        let n = ids.len();
        NetStats::add(&self.stats.ft_outputs_discarded, n as u64);
        warn!(
            "FT connection {}: {why}; discarding {n} held output(s) (ids {}..={}) that the VMM \
             never released: they will never be sent, and their {chains} chain(s) never completed",
            serial.map_or_else(|| "-".to_string(), |s| s.to_string()),
            ids.first().copied().unwrap_or(0),
            ids.last().copied().unwrap_or(0),
        );
    }
}
