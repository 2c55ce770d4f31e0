//! The vhost-user-blk backend: glue between `vhost-user-backend` and the executor.
//!
//! One `BlkBackend` serves one frontend connection. On a kick the vring worker pops every
//! available chain, gives each a [`Ticket`] (its position in avail order), validates it and
//! hands it to the [`Executor`]; completions come back on the NBD reader thread and go
//! through the [`Sequencer`] to the sink, in avail order.
//!
//! With an FT socket ([`crate::ft`]), outputs (write, discard, flush) go through the FT
//! output gate instead of straight to the executor, completions go through [`FtSink`], and
//! while in FT mode the worker does not touch notification suppression (it lives in the used
//! ring, which only the VMM writes then).
//!
//! Lock order: the vring lock is never held while calling into the sequencer, the FT gate
//! or NBD; gate -> sequencer -> FT link -> vring (the sink adds used entries).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::completion::{Completion, CompletionSink, Sequencer, Ticket, VringSink};
use super::config::{DeviceConfig, QUEUE_SIZE};
use super::executor::{Done, Executor};
use super::ft_sink::{FtSink, QUEUE};
use super::output;
use super::request::{parse, Request};
use crate::ft::Ft;
use crate::metrics::METRICS;

type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

/// Tuning of the backend.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// How long `GET_VRING_BASE` waits for requests in flight (e.g. during an NBD outage)
    /// before abandoning them and rewinding the ring to the used index.
    pub drain_timeout: Duration,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// The backend of one frontend connection.
pub struct BlkBackend {
    exec: Arc<Executor>,
    opts: BackendOptions,
    /// FT state when the backend has an FT socket (`--ft-socket`).
    ft: Option<Arc<Ft>>,
    /// Whether the "FT mode with EVENT_IDX" warning was logged.
    warned_event_idx: AtomicBool,
    seq: Arc<Sequencer>,
    mem: Mutex<Option<Mem>>,
    vring: Mutex<Option<VringRwLock>>,
    event_idx: AtomicBool,
    exit: (EventConsumer, EventNotifier),
    /// Raw fds of exit-event consumers handed to `vhost-user-backend`, which registers them
    /// with `into_raw_fd()` and never closes them; [`BlkBackend::release_exit_fds`] does.
    exit_fds_given: Mutex<Vec<RawFd>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BlkBackend {
    pub fn new(exec: Arc<Executor>, opts: BackendOptions, ft: Option<Arc<Ft>>) -> io::Result<Self> {
        Ok(BlkBackend {
            exec,
            opts,
            ft,
            warned_event_idx: AtomicBool::new(false),
            seq: Arc::new(Sequencer::new()),
            mem: Mutex::new(None),
            vring: Mutex::new(None),
            event_idx: AtomicBool::new(false),
            exit: new_event_consumer_and_notifier(EventFlag::NONBLOCK)?,
            exit_fds_given: Mutex::new(Vec::new()),
        })
    }

    fn device(&self) -> &DeviceConfig {
        self.exec.device()
    }

    /// The frontend is gone: drop late completions and stop the worker thread.
    pub fn disconnect(&self) {
        self.seq.close();
        *lock(&self.vring) = None;
        if let Err(e) = self.exit.1.notify() {
            log::error!("cannot stop the vring worker: {e}");
        }
    }

    /// Pops every available chain and starts executing it.
    fn process_queue(&self, vring: &VringRwLock) {
        let Some(mem) = lock(&self.mem).clone() else {
            log::error!("kick before SET_MEM_TABLE; ignored");
            return;
        };
        let guard = mem.memory();
        let mut popped = Vec::new();
        {
            let mut state = vring.get_mut();
            if !state.get_queue().ready() {
                return;
            }
            match state.get_queue_mut().iter(guard.clone()) {
                Ok(iter) => {
                    for chain in iter {
                        popped.push((self.seq.ticket(), chain));
                    }
                }
                Err(e) => log::error!("cannot read the avail ring: {e}"),
            }
        }
        for (ticket, chain) in popped {
            // Kept for the FT output digest, which covers the chain's readable bytes.
            let descriptors = chain.clone();
            match parse(chain) {
                Ok(req) => {
                    METRICS.request(QUEUE, &req.kind);
                    let seq = self.seq.clone();
                    let done: Done = Box::new(move |c: Completion| {
                        METRICS.completed(QUEUE, c.status);
                        seq.deliver(ticket, c)
                    });
                    match &self.ft {
                        Some(ft) if output::is_output(&req) => {
                            let digest = || output::digest(&*guard, descriptors);
                            self.submit_output(ft, ticket, req, done, digest)
                        }
                        _ => self.exec.execute(req, done),
                    }
                }
                Err(bad) => {
                    log::error!("invalid request (head {}): {}", bad.head, bad.error);
                    METRICS.refused(QUEUE);
                    let c = Completion::status_only(
                        bad.head,
                        bad.status_addr,
                        crate::blk::status::IOERR,
                    );
                    self.deliver(ticket, c);
                }
            }
        }
    }

    /// Hands an output to the FT gate. In FT mode it is announced now (in avail order, as
    /// the chains are walked) and its NBD command is issued only once the VMM releases it
    /// (output rule); its completion follows the NBD reply. If the FT connection ends before
    /// the release, the output is discarded: never issued, never completed, and the
    /// sequencer learns that the request is lost ([`Sequencer::lose`]). In plain mode it
    /// runs at once.
    fn submit_output(
        &self,
        ft: &Ft,
        ticket: Ticket,
        req: Request,
        done: Done,
        digest: impl FnOnce() -> [u8; 32],
    ) {
        let exec = self.exec.clone();
        let seq = self.seq.clone();
        let lost = self.seq.clone();
        let head = req.head;
        ft.output(
            QUEUE,
            head,
            (req, done),
            digest,
            move |(req, done)| {
                if seq.is_current(ticket) {
                    exec.execute(req, done);
                } else {
                    // Abandoned (ring stopped, reset, frontend gone) or behind a lost request:
                    // the frontend hands the chain over again once it restarts the ring;
                    // issuing this copy could overwrite newer data, or come from a VMM that
                    // is gone.
                    log::warn!("output of abandoned request (head {head}) discarded");
                }
            },
            move || lost.lose(ticket),
        );
    }

    /// The sink for completions of this connection.
    fn make_sink(&self, mem: Mem, vring: VringRwLock) -> Box<dyn CompletionSink> {
        match &self.ft {
            Some(ft) => Box::new(FtSink::new(mem, vring, ft.clone())),
            None => Box::new(VringSink::new(mem, vring)),
        }
    }

    /// In FT mode (`Role::Primary`): the used ring, `avail_event` included, belongs to the VMM.
    fn ft_mode(&self) -> bool {
        self.ft.as_ref().is_some_and(|f| f.is_primary())
    }

    /// Closes the exit-event fds given to the vring workers, once every worker has exited
    /// (`workers` are the daemon's epoll handlers; each worker thread holds a clone until it
    /// returns). Call after the daemon has been dropped.
    pub fn release_exit_fds<T>(&self, workers: &[Arc<T>]) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while workers.iter().any(|w| Arc::strong_count(w) > 1) {
            if Instant::now() >= deadline {
                log::warn!("vring worker did not exit; leaking its exit eventfd");
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for fd in lock(&self.exit_fds_given).drain(..) {
            // SAFETY: `fd` is the fd of an EventConsumer that vhost-user-backend turned into
            // a raw fd and registered with the epoll of a worker that has exited (its handler
            // has no other owner left), so nobody uses or closes it: we own it now.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }

    fn deliver(&self, t: Ticket, c: Completion) {
        self.seq.deliver(t, c)
    }
}

impl VhostUserBackend for BlkBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        1
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        self.device().features()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        DeviceConfig::protocol_features()
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Release);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        self.device().read_config(offset, size)
    }

    fn set_config(&self, _offset: u32, _buf: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the virtio-blk configuration space is read-only",
        ))
    }

    fn update_memory(&self, mem: Mem) -> io::Result<()> {
        *lock(&self.mem) = Some(mem);
        Ok(())
    }

    fn reset_device(&self) {
        let n = self.seq.abandon();
        if n > 0 {
            log::warn!("device reset with {n} request(s) in flight; their completions are dropped");
        }
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match (self.exit.0.try_clone(), self.exit.1.try_clone()) {
            (Ok(c), Ok(n)) => {
                lock(&self.exit_fds_given).push(c.as_raw_fd());
                Some((c, n))
            }
            (Err(e), _) | (_, Err(e)) => {
                log::error!("cannot clone the exit event: {e}");
                None
            }
        }
    }

    /// `GET_VRING_BASE`: the ring is already marked not ready (no more pops). Wait for the
    /// requests in flight so that the returned base equals the used index. If NBD stays
    /// unreachable past the drain timeout, or at once if a request was lost (its FT output
    /// discarded), abandon them and rewind the avail position to the used index: the
    /// frontend will hand them to us again when it restarts the ring.
    fn stop_vring(&self, _queue_index: u32) -> io::Result<()> {
        if self.seq.drain(self.opts.drain_timeout) {
            return Ok(());
        }
        let n = self.seq.abandon();
        log::warn!(
            "ring stopped with {n} request(s) not completed (waiting for NBD, or lost with a \
             discarded FT output); they will be redone"
        );
        if let Some(vring) = lock(&self.vring).clone() {
            let mut state = vring.get_mut();
            let used = state.get_queue().next_used();
            state.get_queue_mut().set_next_avail(used);
        }
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            log::warn!("unexpected event set {evset:?}");
            return Ok(());
        }
        let Some(vring) = vrings.first().filter(|_| device_event == 0) else {
            log::warn!("event for unknown queue {device_event}");
            return Ok(());
        };
        {
            let mut slot = lock(&self.vring);
            if slot.is_none() {
                *slot = Some(vring.clone());
            }
        }
        if let Some(mem) = lock(&self.mem).clone() {
            let v = vring.clone();
            self.seq.ensure_sink(|| self.make_sink(mem, v));
        }
        let event_idx = self.event_idx.load(Ordering::Acquire);
        if self.ft_mode() {
            // Determinism contract point 4: no backend write into guest memory in FT mode,
            // and `avail_event` / the used flags are guest memory. The driver therefore keeps
            // kicking (flags stay 0 without EVENT_IDX); with EVENT_IDX it would stop once past
            // the last `avail_event` written, unless the VMM maintains that field.
            if event_idx && !self.warned_event_idx.swap(true, Ordering::AcqRel) {
                log::warn!(
                    "FT mode with VIRTIO_RING_F_EVENT_IDX negotiated: the backend no longer \
                     updates avail_event; the VMM must (or must not negotiate EVENT_IDX)"
                );
            }
            self.process_queue(vring);
            return Ok(());
        }
        if !event_idx {
            self.process_queue(vring);
            return Ok(());
        }
        loop {
            if let Err(e) = vring.disable_notification() {
                log::error!("cannot disable notifications: {e}");
            }
            self.process_queue(vring);
            match vring.enable_notification() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    log::error!("cannot enable notifications: {e}");
                    break;
                }
            }
        }
        Ok(())
    }
}
