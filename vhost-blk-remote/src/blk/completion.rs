//! Completions and how they reach the guest.
//!
//! Executing a request (against NBD) and applying its result to the guest are separate
//! steps:
//!
//! 1. The executor ([`super::backend`]) turns a request into a [`Completion`]: a plain value
//!    describing *every* write the device will make into guest memory (data bytes and their
//!    guest addresses, the status byte and its address) plus the used-ring entry
//!    (`head`, `len`). Producing it touches no guest memory.
//! 2. The [`Sequencer`] puts completions back into avail order (a small reorder buffer keyed
//!    by the sequence number each chain got when it was popped) and hands them, in that
//!    order, to a [`CompletionSink`].
//! 3. The sink applies them. [`VringSink`] writes the data and status into guest memory,
//!    adds the used-ring entry and signals the call eventfd.
//!
//! Why in avail order: after a backend restart the VMM resumes the ring at the used index
//! (`VHOST_USER_SET_VRING_BASE` = last used idx) and every request from there on is
//! processed again. With in-order completion "everything before the used index is done,
//! nothing after it is" holds exactly: no request is lost and none is completed twice (a
//! re-executed READ/WRITE/FLUSH is idempotent). It also makes the sequence of completions a
//! deterministic function of the avail ring, which FT replay needs.
//!
//! Fault tolerance: in FT mode the backend must not write guest memory on its own.
//! [`super::ft_sink::FtSink`] sends each completion (exactly the writes listed here) to the
//! VMM, which applies and logs it at a landmark.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vhost_user_backend::{VringRwLock, VringT};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

use super::request::{scatter, Segment};

/// The outcome of one request, as writes to guest memory plus a used-ring entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Head descriptor index of the chain (the used-ring `id`).
    pub head: u16,
    /// The used-ring `len`: bytes written into the device-writable buffers.
    pub len: u32,
    /// `VIRTIO_BLK_S_*`, or `None` when no status byte could be located.
    pub status: Option<u8>,
    /// Where the status byte goes.
    pub status_addr: Option<GuestAddress>,
    /// Bytes for the device-writable data buffers (READ data, GET_ID string).
    pub data: Vec<u8>,
    /// The buffers `data` is scattered over, in order.
    pub data_segs: Vec<Segment>,
}

impl Completion {
    /// A completion that writes only a status byte (or nothing at all).
    pub fn status_only(head: u16, status_addr: Option<GuestAddress>, status: u8) -> Self {
        Completion {
            head,
            len: u32::from(status_addr.is_some()),
            status: status_addr.map(|_| status),
            status_addr,
            data: Vec::new(),
            data_segs: Vec::new(),
        }
    }
}

/// Where completions go, in avail order.
pub trait CompletionSink: Send {
    /// Applies (or holds) one completion.
    fn apply(&mut self, c: Completion);
    /// Called after a batch of `apply` calls: time to notify the driver if needed.
    fn batch_done(&mut self);
}

/// The plain vhost-user sink: guest memory, used ring, call eventfd.
pub struct VringSink {
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
    vring: VringRwLock,
    added: bool,
}

impl VringSink {
    pub fn new(mem: GuestMemoryAtomic<GuestMemoryMmap>, vring: VringRwLock) -> Self {
        VringSink {
            mem,
            vring,
            added: false,
        }
    }
}

impl CompletionSink for VringSink {
    fn apply(&mut self, c: Completion) {
        let mem = self.mem.memory();
        let mut status = c.status;
        if let Err(e) = scatter(&*mem, &c.data_segs, &c.data) {
            log::error!(
                "request {}: writing data to guest memory failed: {e}",
                c.head
            );
            status = status.map(|_| crate::blk::status::IOERR);
        }
        if let (Some(s), Some(a)) = (status, c.status_addr) {
            if let Err(e) = mem.write_obj(s, a) {
                log::error!("request {}: writing the status byte failed: {e}", c.head);
            }
        }
        match self.vring.add_used(c.head, c.len) {
            Ok(()) => self.added = true,
            Err(e) => log::error!("request {}: cannot add to the used ring: {e}", c.head),
        }
    }

    fn batch_done(&mut self) {
        if !std::mem::take(&mut self.added) {
            return;
        }
        match self.vring.needs_notification() {
            Ok(true) => {
                if let Err(e) = self.vring.signal_used_queue() {
                    log::error!("cannot signal the used queue: {e}");
                }
            }
            Ok(false) => {}
            Err(e) => log::error!("cannot evaluate notification suppression: {e}"),
        }
    }
}

/// A reorder buffer: accepts `(seq, item)` in any order, releases items in `seq` order.
#[derive(Debug)]
pub struct InOrder<T> {
    next: u64,
    waiting: BTreeMap<u64, T>,
}

impl<T> InOrder<T> {
    pub fn new(first: u64) -> Self {
        InOrder {
            next: first,
            waiting: BTreeMap::new(),
        }
    }

    /// Inserts one item; returns every item that is now releasable, in order.
    pub fn push(&mut self, seq: u64, item: T) -> Vec<T> {
        if seq < self.next {
            log::error!("completion {seq} arrived twice or too late; dropped");
            return Vec::new();
        }
        self.waiting.insert(seq, item);
        let mut out = Vec::new();
        while let Some(item) = self.waiting.remove(&self.next) {
            out.push(item);
            self.next += 1;
        }
        out
    }

    /// Sequence number of the next item to release.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Number of items held back.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Forgets everything held back and restarts at `first`.
    pub fn reset(&mut self, first: u64) {
        self.waiting.clear();
        self.next = first;
    }
}

struct SeqState {
    epoch: u64,
    order: InOrder<Completion>,
    sink: Option<Box<dyn CompletionSink>>,
    /// Lowest sequence number of this epoch whose request will never complete (its held FT
    /// output was discarded, see [`Sequencer::lose`]); nothing from there on can be applied.
    lost: Option<u64>,
}

/// Numbers requests as they are popped and applies their completions in that order.
///
/// `epoch` changes whenever the in-flight requests are abandoned (ring stopped while NBD
/// was unreachable or behind a lost request, device reset, frontend gone): completions of an
/// older epoch are dropped.
pub struct Sequencer {
    next_seq: AtomicU64,
    epoch: AtomicU64,
    closed: AtomicBool,
    state: Mutex<SeqState>,
    idle: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The ticket a popped request carries until its completion is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub epoch: u64,
    pub seq: u64,
}

impl Default for Sequencer {
    fn default() -> Self {
        Self::new()
    }
}

impl Sequencer {
    pub fn new() -> Self {
        Sequencer {
            next_seq: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            state: Mutex::new(SeqState {
                epoch: 0,
                order: InOrder::new(0),
                sink: None,
                lost: None,
            }),
            idle: Condvar::new(),
        }
    }

    /// Installs the sink if there is none yet.
    pub fn ensure_sink(&self, make: impl FnOnce() -> Box<dyn CompletionSink>) {
        let mut st = lock(&self.state);
        if st.sink.is_none() && !self.closed.load(Ordering::Acquire) {
            st.sink = Some(make());
        }
    }

    /// Hands out the next ticket. Must be called in avail order (under the vring lock).
    pub fn ticket(&self) -> Ticket {
        Ticket {
            epoch: self.epoch.load(Ordering::Acquire),
            seq: self.next_seq.fetch_add(1, Ordering::AcqRel),
        }
    }

    /// Whether the request holding `t` still counts (not abandoned, frontend not gone, not
    /// behind a lost request). A held FT output whose request was abandoned is never issued:
    /// the frontend will hand the chain to us again, and issuing the stale copy later could
    /// overwrite newer data. Neither is an output behind a lost request: its completion could
    /// never be applied (avail order), so it would only be redone after the ring restarts,
    /// and it may come from a VMM that is gone (see [`Sequencer::lose`]).
    pub fn is_current(&self, t: Ticket) -> bool {
        let st = lock(&self.state);
        t.epoch == st.epoch
            && !self.closed.load(Ordering::Acquire)
            && st.lost.is_none_or(|l| t.seq < l)
    }

    /// Request `t` will never complete: its held FT output was discarded because the FT
    /// connection ended before the VMM released it. No completion is ever sent or applied
    /// for it, so no later request of this epoch can be completed either (that would break
    /// "everything before the used index is done, nothing after it is"): their completions
    /// are dropped and their outputs not issued ([`Sequencer::is_current`]). The epoch ends
    /// when the frontend stops the ring (`drain` then fails at once, and the ring is rewound
    /// to the used index so the frontend hands these requests over again), resets the device
    /// or goes away; a new frontend connection has a sequencer of its own.
    pub fn lose(&self, t: Ticket) {
        let mut st = lock(&self.state);
        if t.epoch != st.epoch || self.closed.load(Ordering::Acquire) {
            return;
        }
        if st.lost.is_none() {
            log::warn!(
                "request {} will never complete (its FT output was discarded); this ring \
                 completes nothing more until the frontend stops, resets or reconnects it",
                t.seq
            );
        }
        st.lost = Some(st.lost.map_or(t.seq, |l| l.min(t.seq)));
        self.idle.notify_all();
    }

    /// Delivers a completion; applies it and every following one that is ready.
    pub fn deliver(&self, t: Ticket, c: Completion) {
        let mut st = lock(&self.state);
        if t.epoch != st.epoch || self.closed.load(Ordering::Acquire) {
            log::debug!(
                "dropping completion of abandoned request {} (head {})",
                t.seq,
                c.head
            );
            return;
        }
        if st.lost.is_some_and(|l| t.seq >= l) {
            log::debug!(
                "dropping completion of request {} (head {}): behind a lost request",
                t.seq,
                c.head
            );
            return;
        }
        let ready = st.order.push(t.seq, c);
        if let Some(sink) = st.sink.as_mut() {
            let any = !ready.is_empty();
            for c in ready {
                sink.apply(c);
            }
            if any {
                sink.batch_done();
            }
        } else if !ready.is_empty() {
            log::error!("{} completion(s) without a sink; dropped", ready.len());
        }
        self.idle.notify_all();
    }

    /// Number of tickets handed out whose completion has not been applied.
    pub fn in_flight(&self) -> u64 {
        let st = lock(&self.state);
        self.next_seq.load(Ordering::Acquire) - st.order.next()
    }

    /// Waits until every ticket handed out has been applied; `false` on timeout, or at once
    /// if a lost request ([`Sequencer::lose`]) makes that impossible.
    pub fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.state);
        loop {
            if st.order.next() >= self.next_seq.load(Ordering::Acquire) {
                return true;
            }
            if st.lost.is_some() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = match self.idle.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Abandons every request in flight: their completions will be dropped.
    pub fn abandon(&self) -> u64 {
        let mut st = lock(&self.state);
        let next = self.next_seq.load(Ordering::Acquire);
        let dropped = next - st.order.next();
        st.epoch += 1;
        self.epoch.store(st.epoch, Ordering::Release);
        st.order.reset(next);
        st.lost = None;
        self.idle.notify_all();
        dropped
    }

    /// The frontend is gone: drop the sink and every later completion.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.abandon();
        lock(&self.state).sink = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};

    #[test]
    fn in_order_releases_in_sequence() {
        let mut o = InOrder::new(0);
        assert!(o.push(2, 'c').is_empty());
        assert!(o.push(1, 'b').is_empty());
        assert_eq!(o.push(0, 'a'), vec!['a', 'b', 'c']);
        assert_eq!(o.push(3, 'd'), vec!['d']);
        assert!(o.push(3, 'x').is_empty()); // duplicate
        assert_eq!(o.next(), 4);
        assert!(o.push(5, 'f').is_empty());
        assert_eq!(o.waiting(), 1);
        o.reset(10);
        assert_eq!(o.waiting(), 0);
        assert_eq!(o.push(10, 'k'), vec!['k']);
    }

    struct Recorder(Arc<StdMutex<Vec<u16>>>);
    impl CompletionSink for Recorder {
        fn apply(&mut self, c: Completion) {
            self.0.lock().unwrap().push(c.head);
        }
        fn batch_done(&mut self) {}
    }

    #[test]
    fn sequencer_applies_in_ticket_order_and_drops_abandoned() {
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let s = Sequencer::new();
        let r = seen.clone();
        s.ensure_sink(move || Box::new(Recorder(r)));
        let t: Vec<Ticket> = (0..4).map(|_| s.ticket()).collect();
        let c = |h| Completion::status_only(h, None, 0);
        s.deliver(t[2], c(2));
        s.deliver(t[1], c(1));
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(s.in_flight(), 4);
        assert!(!s.drain(Duration::from_millis(10)));
        s.deliver(t[0], c(0));
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
        assert_eq!(s.abandon(), 1);
        s.deliver(t[3], c(3)); // stale epoch: dropped
        assert!(s.drain(Duration::from_millis(10)));
        let t4 = s.ticket();
        s.deliver(t4, c(4));
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 4]);
    }

    #[test]
    fn a_lost_request_blocks_only_its_epoch_and_drain_gives_up_at_once() {
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let s = Sequencer::new();
        let r = seen.clone();
        s.ensure_sink(move || Box::new(Recorder(r)));
        let t: Vec<Ticket> = (0..4).map(|_| s.ticket()).collect();
        let c = |h| Completion::status_only(h, None, 0);
        s.deliver(t[0], c(0));
        s.lose(t[2]);
        s.lose(t[3]); // the lowest lost one counts
        s.deliver(t[1], c(1));
        s.deliver(t[3], c(3)); // behind the lost one: never applied
        assert_eq!(*seen.lock().unwrap(), vec![0, 1]);
        assert!(s.is_current(t[1]));
        assert!(!s.is_current(t[2]) && !s.is_current(t[3]));
        let t4 = s.ticket();
        assert!(!s.is_current(t4), "later outputs are not issued either");
        let t0 = Instant::now();
        assert!(!s.drain(Duration::from_secs(5)));
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "no waiting for the impossible"
        );
        // Ring stopped (or device reset): a new epoch starts clean.
        assert_eq!(s.abandon(), 3);
        let t5 = s.ticket();
        assert!(s.is_current(t5));
        s.deliver(t5, c(5));
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 5]);
        assert!(s.drain(Duration::from_millis(10)));
        s.lose(t[2]); // a stale ticket changes nothing
        assert!(s.is_current(s.ticket()));
    }
}
