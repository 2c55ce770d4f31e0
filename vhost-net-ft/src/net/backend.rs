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

use crate::net::config::{
    device_features, protocol_features, NetConfig, MAX_QUEUE_SIZE, NUM_QUEUES, RX_QUEUE, TX_QUEUE,
};
use crate::net::rx::{run_rx, RxBounce, RX_SCRATCH_LEN};
use crate::net::stats::NetStats;
use crate::net::tx::{run_tx, TapOutput, TxOutput};
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
    tx_out: Box<dyn TxOutput>,
    epoll: Option<Weak<EpollHandler>>,
    tap_polled: bool,
}

impl NetBackend {
    /// A backend for one connection, writing TX frames straight to the TAP.
    pub fn new(config: NetConfig, tap: Arc<Tap>, stats: Arc<NetStats>) -> Self {
        let tx_out = Box::new(TapOutput::new(tap.clone(), stats.clone()));
        NetBackend {
            config,
            tap,
            stats,
            mem: None,
            acked_features: 0,
            rx: RxBounce::new(PLAIN_BOUNCE_FRAMES),
            scratch: vec![0u8; RX_SCRATCH_LEN],
            tx_out,
            epoll: None,
            tap_polled: false,
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
        let result = run_rx(
            &mut self.rx,
            &*self.tap,
            &mut self.scratch,
            state.get_queue_mut(),
            &*mem,
            &self.stats,
        );
        let poll = match result {
            Ok(run) => {
                if run.used > 0 {
                    if let Err(e) = state.signal_used_queue() {
                        error!("RX: cannot notify the guest: {e}");
                    }
                }
                run.poll_tap
            }
            Err(e) => {
                // The used ring is outside guest memory: nothing can be delivered until the
                // frontend sets the queue up again (which kicks RX and re-enables polling).
                error!("RX queue unusable, pausing TAP polling: {e}");
                if let Err(e) = state.signal_used_queue() {
                    error!("RX: cannot notify the guest: {e}");
                }
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
        let used = match run_tx(
            state.get_queue_mut(),
            &*mem,
            self.tx_out.as_mut(),
            &self.stats,
        ) {
            Ok(n) => n,
            Err(e) => {
                error!("TX queue unusable: {e}");
                1
            }
        };
        if used > 0 {
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
