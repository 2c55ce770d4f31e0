//! The state shared by the FT control connection (reader thread) and the data path (the
//! vhost-user worker thread): the connection and its role, the output numbering and the
//! held outputs.
//!
//! Everything is behind one mutex, and every decision the data path makes for one chain
//! (hold or release its frame, complete it in guest memory or send the completion) is taken
//! under it. So a `Release` or `SetRole` from the VMM is applied between two chains, never in
//! the middle of one, and frames leave the TAP in production order whichever thread writes
//! them.
//!
//! How held frames end: `Release { id }` lets them leave up to `id`, `SetRole { Live }` lets
//! all of them leave (the VMM that won the arbiter decided so). The end of the connection
//! (EOF, error, garbage, a failed send, replacement by a new `Hello`) *discards* them: a held
//! frame is one the backup has not acknowledged, and once its VMM is gone the backup may go
//! live from an earlier log position, where the guest never sent it (or sends something
//! else). The survivor re-executes; a frame that was never sent is an ordinary packet loss,
//! a frame that leaked cannot be taken back.

use std::collections::VecDeque;
use std::io;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ft_control::{output_digest, ControlError, Message, Role, VERSION};
use log::{debug, info, warn};

use crate::net::stats::NetStats;
use crate::net::tx::{PacketSink, TapOutput, TxFrame, TxOutput};

/// How long a message to the VMM may block before the connection is declared dead (the VMM
/// must read its FT socket continuously; a stuck VMM must not stall the guest's NIC forever).
pub const FT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The VMM connection currently attached.
struct Conn {
    /// Write side (a clone of the reader thread's stream).
    stream: UnixStream,
    /// Number of the accepted connection (stale reader threads are ignored).
    serial: u64,
    role: Role,
    /// Id of the next output (1, 2, 3, ... per connection).
    next_id: u64,
    /// Highest id the VMM has released.
    released: u64,
}

/// A frame waiting for `Release`.
struct Held {
    id: u64,
    frame: TxFrame,
}

/// Mutable link state (see the module documentation).
pub(crate) struct State {
    conn: Option<Conn>,
    /// Where frames go when they leave (the TAP).
    pub(crate) out: TapOutput,
    /// Announced, not yet released outputs, in id order.
    held: VecDeque<Held>,
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
                out: TapOutput::new(sink, stats.clone()),
                held: VecDeque::new(),
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

    /// Attaches the VMM connection `serial`, whose `Hello` asked for `role`, and answers
    /// `HelloAck`; a previous connection, if any, is dropped first (its held outputs are
    /// discarded, see the module documentation).
    ///
    /// The answer is sent under the lock, after the switch: every chain the backend completed
    /// itself was completed before the VMM sees `HelloAck`, and everything after it follows
    /// `role` (with `ft_control::accept_hello` the ack would precede the switch).
    pub fn attach(
        &self,
        mut stream: UnixStream,
        role: Role,
        serial: u64,
    ) -> Result<(), ControlError> {
        stream.set_write_timeout(Some(FT_WRITE_TIMEOUT))?;
        let mut st = self.lock();
        st.drop_conn("replaced by a new FT connection");
        Message::HelloAck { version: VERSION }.write_to(&mut stream)?;
        st.conn = Some(Conn {
            stream,
            serial,
            role,
            next_id: 1,
            released: 0,
        });
        NetStats::inc(&self.stats.ft_connections);
        info!("FT connection {serial}: attached, role {role:?}");
        Ok(())
    }

    /// Detaches connection `serial` (it closed or misbehaved): its held outputs are
    /// discarded, never sent (the VMM that held them is gone: see the module documentation),
    /// and the link is back in plain mode.
    pub fn detach(&self, serial: u64, why: &str) {
        let mut st = self.lock();
        if st.conn.as_ref().is_some_and(|c| c.serial == serial) {
            info!("FT connection {serial}: detached ({why}); plain mode");
            st.drop_conn(why);
        }
    }

    /// `Release { id }` from connection `serial`: outputs up to `id` leave, in id order.
    pub fn release(&self, serial: u64, id: u64) {
        let mut st = self.lock();
        let Some(conn) = st.conn.as_mut().filter(|c| c.serial == serial) else {
            return;
        };
        if id >= conn.next_id {
            // Not an error: such a release also covers outputs produced later (the VMM only
            // promises that everything up to `id` may leave).
            debug!(
                "FT: release {id} is ahead of the last output {}",
                conn.next_id - 1
            );
        }
        conn.released = conn.released.max(id);
        st.leave_released();
    }

    /// `SetRole` from connection `serial`. `Live`: plain mode, held outputs leave at once.
    /// `Primary`: completions go to the VMM and outputs are held from the next chain on.
    pub fn set_role(&self, serial: u64, role: Role) {
        let mut st = self.lock();
        let Some(conn) = st.conn.as_mut().filter(|c| c.serial == serial) else {
            return;
        };
        info!("FT connection {serial}: role {:?} -> {role:?}", conn.role);
        conn.role = role;
        if role == Role::Live {
            st.leave_all("role set to Live");
        }
    }

    /// The current role: `Live` when no VMM is attached.
    pub fn role(&self) -> Role {
        self.lock().conn.as_ref().map_or(Role::Live, |c| c.role)
    }

    /// Number of outputs waiting for `Release`.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }
}

impl State {
    /// Whether completions go to the VMM and outputs are held.
    pub(crate) fn is_primary(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.role == Role::Primary)
    }

    /// Sends one message to the attached VMM. On failure the connection is dropped (held
    /// outputs discarded, back to plain mode) and the error returned; the caller then does
    /// the plain-mode thing.
    pub(crate) fn send(&mut self, msg: &Message) -> Result<(), ControlError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(ControlError::Io(io::ErrorKind::NotConnected.into()));
        };
        let result = msg.write_to(&mut conn.stream);
        if let Err(e) = &result {
            NetStats::inc(&self.stats.ft_bad_connections);
            warn!("FT connection {}: sending failed: {e}", conn.serial);
            self.drop_conn("sending failed");
        }
        result
    }

    /// Output rule: in FT mode a frame is announced with its digest and held until the VMM
    /// releases its id; otherwise it leaves at once. If announcing fails, the connection is
    /// gone and the frame is discarded with the other held ones (it was produced while an FT
    /// primary was attached, and nobody has acknowledged it).
    pub(crate) fn output(&mut self, queue: u16, head: u16, frame: TxFrame) {
        if let Some(id) = self
            .conn
            .as_ref()
            .filter(|c| c.role == Role::Primary)
            .map(|c| c.next_id)
        {
            let digest = output_digest(frame.guest_bytes());
            // Held before the announcement, so that a failed send discards it too.
            self.held.push_back(Held { id, frame });
            let announced = Message::OutputReady {
                id,
                queue,
                head,
                digest,
            };
            if self.send(&announced).is_ok() {
                if let Some(c) = self.conn.as_mut() {
                    c.next_id += 1;
                }
                NetStats::inc(&self.stats.ft_outputs);
                // A release may already cover it.
                self.leave_released();
            }
            return;
        }
        // Plain mode: held is empty (leaving FT mode releases or discards everything), so
        // the order of frames is kept.
        self.out.release(frame);
    }

    /// Writes the held outputs whose id has been released.
    fn leave_released(&mut self) {
        let released = self.conn.as_ref().map_or(u64::MAX, |c| c.released);
        while self.held.front().is_some_and(|h| h.id <= released) {
            if let Some(h) = self.held.pop_front() {
                self.out.release(h.frame);
            }
        }
    }

    /// Writes every held output (`SetRole { Live }`: the VMM decided to go live).
    fn leave_all(&mut self, why: &str) {
        if !self.held.is_empty() {
            info!("FT: releasing {} held output(s): {why}", self.held.len());
        }
        while let Some(h) = self.held.pop_front() {
            self.out.release(h.frame);
        }
    }

    /// Drops the connection (if any) and discards everything held: those frames never reach
    /// the TAP (see the module documentation).
    fn drop_conn(&mut self, why: &str) {
        let serial = self.conn.take().map(|c| {
            // Wakes the reader thread of that connection up, which then finds it detached.
            let _ = c.stream.shutdown(Shutdown::Both);
            c.serial
        });
        if self.held.is_empty() {
            return;
        }
        let n = self.held.len();
        let (first, last) = (
            self.held.front().map_or(0, |h| h.id),
            self.held.back().map_or(0, |h| h.id),
        );
        self.held.clear();
        NetStats::add(&self.stats.ft_outputs_discarded, n as u64);
        warn!(
            "FT connection {}: {why}; discarding {n} held output(s) (ids {first}..={last}) that \
             the VMM never released: they will never be sent",
            serial.map_or_else(|| "-".to_string(), |s| s.to_string())
        );
    }
}
