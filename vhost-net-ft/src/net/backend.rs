//! The vhost-user backend object: glue between `vhost-user-backend` and the RX/TX paths.
//!
//! One [`NetBackend`] serves one frontend connection (the server makes a fresh one per
//! connection, sharing the TAP and the counters). All queues and the TAP are handled by the
//! library's single worker thread. Event tokens: 0 = RX kick, 1 = TX kick, 2 = reserved by the
//! library (exit / vring enabled), [`TAP_EVENT`] = TAP readable.
//!
//! The TAP is in the worker's epoll set only while the guest has RX buffers: when a frame
//! finds no buffer it waits in the bounce buffer, the TAP is removed from the epoll set, and
//! the next RX kick (the guest refilled) delivers it and re-adds the TAP.
//!
//! Finished chains go through the process's [`FtLink`] ([`FtCompleter`]): plain vhost-user
//! behaviour unless an FT primary VMM is attached (see [`crate::ft`]). The guest is notified
//! (call eventfd) only for chains the backend completed itself. Each queue has its
//! [`VmmSlots`]: the used slots the VMM fills with completions the link sent later (a TX
//! chain held in FT mode is completed when its frame leaves).
//!
//! When the frontend starts the rings, the guest MAC is announced on the TAP with a RARP
//! frame ([`crate::net::announce`]), once per activation.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Weak};

use log::{debug, error, info, warn};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VringEpollHandler, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::ft::{FtCompleter, FtLink, VmmSlots};
use crate::net::announce::rarp_packet;
use crate::net::completion::Completer;
use crate::net::config::{
    device_features, protocol_features, NetConfig, MAX_QUEUE_SIZE, NUM_QUEUES, RX_QUEUE, TX_QUEUE,
};
use crate::net::rx::{run_rx, RxBounce, RX_SCRATCH_LEN};
use crate::net::stats::NetStats;
use crate::net::tx::run_tx;
use crate::tap::Tap;

/// Guest memory as the vhost-user library provides it.
pub type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;
/// The vring type used by this backend.
pub type NetVring = VringRwLock<Mem>;
/// The backend as handed to the vhost-user library.
pub type SharedBackend = Arc<std::sync::RwLock<NetBackend>>;
/// The library's epoll handler for this backend.
pub type EpollHandler = VringEpollHandler<SharedBackend>;

/// Epoll token of the TAP file descriptor (must be above `NUM_QUEUES`, which the library
/// reserves).
#[allow(clippy::cast_possible_truncation)] // two queues
pub const TAP_EVENT: u16 = NUM_QUEUES as u16 + 1;

/// Plain-mode bounce capacity: a frame is read from the TAP only when the previous one found
/// a guest buffer.
const PLAIN_BOUNCE_FRAMES: usize = 1;

/// Per-connection device state.
pub struct NetBackend {
    config: NetConfig,
    tap: Arc<Tap>,
    stats: Arc<NetStats>,
    mem: Option<Mem>,
    acked_features: u64,
    rx: RxBounce,
    scratch: Vec<u8>,
    link: Arc<FtLink>,
    /// Used slots the VMM fills, per queue (see [`VmmSlots`]).
    rx_slots: Arc<VmmSlots>,
    tx_slots: Arc<VmmSlots>,
    epoll: Option<Weak<EpollHandler>>,
    tap_polled: bool,
    /// Whether the guest MAC was announced since the rings were (re)started.
    announced: bool,
}

impl NetBackend {
    /// A backend for one connection; TX frames leave through `link` (at once in plain mode,
    /// on the VMM's release in FT mode).
    pub fn new(config: NetConfig, tap: Arc<Tap>, stats: Arc<NetStats>, link: Arc<FtLink>) -> Self {
        NetBackend {
            config,
            tap,
            stats,
            mem: None,
            acked_features: 0,
            rx: RxBounce::new(PLAIN_BOUNCE_FRAMES),
            scratch: vec![0u8; RX_SCRATCH_LEN],
            link,
            rx_slots: Arc::default(),
            tx_slots: Arc::default(),
            epoll: None,
            tap_polled: false,
            announced: false,
        }
    }

    /// Gives the backend the epoll handler of its worker thread, so that it can add and remove
    /// the TAP.
    pub fn attach_epoll(&mut self, handler: Weak<EpollHandler>) {
        self.epoll = Some(handler);
    }

    /// The process-wide counters.
    pub fn stats(&self) -> &Arc<NetStats> {
        &self.stats
    }

    fn set_tap_polling(&mut self, on: bool) {
        if on == self.tap_polled {
            return;
        }
        let Some(handler) = self.epoll.as_ref().and_then(Weak::upgrade) else {
            return;
        };
        let fd = self.tap.as_raw_fd();
        let data = u64::from(TAP_EVENT);
        let result = if on {
            handler.register_listener(fd, EventSet::IN, data)
        } else {
            handler.unregister_listener(fd, EventSet::IN, data)
        };
        match result {
            Ok(()) => {
                debug!("TAP polling {}", if on { "on" } else { "off" });
                self.tap_polled = on;
            }
            Err(e) if on && e.kind() == io::ErrorKind::AlreadyExists => self.tap_polled = true,
            Err(e) if !on && e.raw_os_error() == Some(libc::ENOENT) => self.tap_polled = false,
            Err(e) => error!(
                "cannot turn TAP polling {}: {e}",
                if on { "on" } else { "off" }
            ),
        }
    }

    /// Sends the RARP announcement once the frontend has started a ring (the library calls
    /// `handle_event` for each ring when it becomes ready and enabled), as QEMU's
    /// `qemu_announce_self` does after start and migration: bridges learn the guest MAC's port
    /// now, e.g. after a failover moved the guest to this host. It is written directly: it
    /// is not guest output, so the output rule does not apply.
    fn announce_if_started(&mut self, vrings: &[NetVring]) {
        if self.announced {
            return;
        }
        let started = vrings.iter().any(|v| {
            let st = v.get_ref();
            st.get_queue().ready() && st.is_enabled()
        });
        if !started {
            return;
        }
        self.announced = true;
        match self.tap.write_packet(&rarp_packet(self.config.mac)) {
            Ok(()) => {
                NetStats::inc(&self.stats.announces);
                info!(
                    "announced MAC {} on {} (RARP)",
                    self.config.mac,
                    self.tap.name()
                );
            }
            Err(e) => warn!(
                "cannot announce MAC {} on {}: {e}",
                self.config.mac,
                self.tap.name()
            ),
        }
    }

    fn drop_bounced(&mut self, why: &str) {
        let n = self.rx.clear();
        if n > 0 {
            NetStats::add(&self.stats.rx_dropped_no_queue, n as u64);
            warn!("RX: dropping {n} frame(s) waiting for a guest buffer: {why}");
        }
    }

    fn process_rx(&mut self, vrings: &[NetVring]) {
        let (Some(vring), Some(mem)) = (vrings.get(RX_QUEUE), self.mem.as_ref()) else {
            self.set_tap_polling(false);
            return;
        };
        let mem = mem.memory();
        let mut state = vring.get_mut();
        if !(state.get_queue().ready() && state.is_enabled()) {
            drop(state);
            self.set_tap_polling(false);
            return;
        }
        let mut completer = FtCompleter::new(&self.link, &self.rx_slots);
        let result = run_rx(
            &mut self.rx,
            &*self.tap,
            &mut self.scratch,
            state.get_queue_mut(),
            &*mem,
            &mut completer,
            &self.stats,
        );
        // In FT mode the call eventfd is the VMM's (it injects at a landmark): notify only
        // for chains completed here.
        if completer.guest_used() > 0 {
            if let Err(e) = state.signal_used_queue() {
                error!("RX: cannot notify the guest: {e}");
            }
        }
        let poll = match result {
            Ok(run) => run.poll_tap,
            Err(e) => {
                // The used ring is outside guest memory: nothing can be delivered until the
                // frontend sets the queue up again (which kicks RX and re-enables polling).
                error!("RX queue unusable, pausing TAP polling: {e}");
                false
            }
        };
        drop(state);
        self.set_tap_polling(poll);
    }

    fn process_tx(&mut self, vrings: &[NetVring]) {
        let (Some(vring), Some(mem)) = (vrings.get(TX_QUEUE), self.mem.as_ref()) else {
            return;
        };
        let mem = mem.memory();
        let mut state = vring.get_mut();
        if !(state.get_queue().ready() && state.is_enabled()) {
            return;
        }
        let mut completer = FtCompleter::new(&self.link, &self.tx_slots);
        if let Err(e) = run_tx(state.get_queue_mut(), &*mem, &mut completer, &self.stats) {
            error!("TX queue unusable: {e}");
        }
        if completer.guest_used() > 0 {
            if let Err(e) = state.signal_used_queue() {
                error!("TX: cannot notify the guest: {e}");
            }
        }
    }
}

impl VhostUserBackendMut for NetBackend {
    type Bitmap = ();
    type Vring = NetVring;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        device_features()
    }

    fn acked_features(&mut self, features: u64) {
        info!("guest features acknowledged: {features:#x}");
        self.acked_features = features;
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        protocol_features()
    }

    fn reset_device(&mut self) {
        info!("device reset");
        self.set_tap_polling(false);
        self.drop_bounced("device reset");
        self.acked_features = 0;
        self.announced = false;
    }

    fn set_event_idx(&mut self, enabled: bool) {
        // EVENT_IDX is not offered, so the library only ever reports `false`.
        if enabled {
            warn!("EVENT_IDX enabled although not offered; notifying on every batch");
        }
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let v = self.config.read_config(offset, size);
        if v.is_empty() {
            warn!("GET_CONFIG outside the config space: offset {offset}, size {size}");
        }
        v
    }

    fn set_config(&mut self, offset: u32, buf: &[u8]) -> io::Result<()> {
        warn!(
            "refusing SET_CONFIG at offset {offset} ({} bytes)",
            buf.len()
        );
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the virtio-net configuration space is read-only",
        ))
    }

    fn update_memory(&mut self, mem: Mem) -> io::Result<()> {
        debug!("guest memory table updated");
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK) {
            Ok(pair) => Some(pair),
            Err(e) => {
                error!("cannot create the worker exit event: {e}");
                None
            }
        }
    }

    fn stop_vring(&mut self, queue_index: u32) -> io::Result<()> {
        debug!("vring {queue_index} stopped");
        // A restart (e.g. after migration) is a new activation: announce again.
        self.announced = false;
        if queue_index as usize == RX_QUEUE {
            self.set_tap_polling(false);
        }
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[NetVring],
        _thread_id: usize,
    ) -> io::Result<()> {
        // Errors are handled (logged, counted) here: an `Err` would end the worker thread.
        self.announce_if_started(vrings);
        match device_event {
            e if usize::from(e) == RX_QUEUE => self.process_rx(vrings),
            e if usize::from(e) == TX_QUEUE => self.process_tx(vrings),
            TAP_EVENT => {
                if evset.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                    warn!("TAP reports {evset:?}");
                }
                self.process_rx(vrings)
            }
            other => warn!("ignoring unexpected event {other} ({evset:?})"),
        }
        Ok(())
    }
}

impl Drop for NetBackend {
    fn drop(&mut self) {
        self.drop_bounced("frontend connection closed");
    }
}
