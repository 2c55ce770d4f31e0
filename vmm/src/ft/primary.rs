//! The primary's recorder: everything non-deterministic the vCPU thread applies at a landmark
//! is also sent to the backup, tagged with the landmark and that exit's signature. Without a
//! backup the recorder only keeps the running signature hash and releases outputs at once.
//! When the backup is lost, outputs stay held until the arbiter has answered (ft::failover):
//! a win releases them and the primary goes on unprotected; a loss halts it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::channel::{release_acked, PendingLink, PrimaryLink, ReleaseFn};
use super::dirty::DirtyLog;
use super::engine::{EngineStop, LogSink};
use super::failover::{next_epoch, Arbitration, Verdict};
use super::joiner;
use super::precopy::{JoinProgress, JoinState};
use super::record::Record;
use crate::config::FailoverConfig;
use crate::devices::virtio::ft_link::FtLink;
use crate::event_loop::Registrar;
use crate::inbox::Inbox;
use crate::metrics::METRICS;
use crate::sync::lock;

/// Flow control: the vCPU waits at a landmark while more records than this are unacknowledged.
pub const MAX_UNACKED: u64 = 20_000;

/// A backup that is joining: the pre-copy runs, the link is read and watched.
/// Why the control socket's `protect` was refused (the reply's message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtectError {
    #[error("not an FT primary")]
    NotPrimary,
    #[error("already protected by a backup")]
    Protected,
    #[error("a backup is joining")]
    Joining,
    #[error("waiting for the arbiter's verdict")]
    Arbitrating,
}

pub struct Join {
    pub link: PendingLink,
    pub epoch: u64,
    pub state: Arc<Mutex<JoinState>>,
    pub progress: Arc<JoinProgress>,
    pub started: Instant,
}

pub struct Primary {
    link: Option<PrimaryLink>,
    /// Set while a backup joins (pre-copy); the guest runs unprotected meanwhile.
    pub join: Option<Join>,
    /// KVM's dirty log plus the pages this VMM writes (pre-copy).
    pub dirty: Option<Arc<DirtyLog>>,
    /// Throttling during a join: when the vCPU last started a run slice.
    ran_since: Option<Instant>,
    /// Set while the arbiter is being asked (the link died); outputs stay held meanwhile.
    arbitration: Option<Arbitration>,
    /// The current pairing's epoch (0 before the first backup joined).
    pub epoch: u64,
    /// The newest output id each backend (by virtio slot) announced: what a won arbitration
    /// releases.
    last_output: Vec<u64>,
    pub failover: FailoverConfig,
    inbox: Arc<Inbox>,
    /// The event loop, where the link's watchdog, the joiner and the arbiter's questions run.
    pub events: Registrar,
    /// FT control links to the backends, by virtio slot.
    pub backends: Arc<Vec<Option<Arc<FtLink>>>>,
    pub stats: PrimaryStats,
    /// Set while the primary has no backup: the joiner thread then tries to reach one.
    pub join_wanted: Arc<AtomicBool>,
    /// Where the joiner looks for a backup (`--peer`, or the control socket's `protect`).
    pub join_target: Arc<Mutex<Option<SocketAddr>>>,
    protected_since: Instant,
    last_report: Instant,
}

/// How often the primary logs its replication summary.
const REPORT_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct PrimaryStats {
    pub records: u64,
    pub outputs: u64,
    pub throttled: Duration,
    pub join_pause: Option<Duration>,
    /// The last join: from the backup's connection to the end of its stop-and-copy.
    pub join_total: Option<Duration>,
    pub join_rounds: u32,
    /// Bytes of guest memory the last join sent (zero pages excluded).
    pub join_bytes: u64,
    pub join_throttle_max_pct: u32,
    /// The last join's round 0 (all memory, guest running), in ms.
    pub join_first_round_ms: u64,
}

impl Primary {
    pub fn new(
        backends: Vec<Option<Arc<FtLink>>>,
        failover: FailoverConfig,
        inbox: Arc<Inbox>,
        events: Registrar,
        dirty: Option<Arc<DirtyLog>>,
    ) -> Self {
        Primary {
            link: None,
            join: None,
            dirty,
            ran_since: None,
            arbitration: None,
            epoch: 0,
            last_output: vec![0; backends.len()],
            failover,
            inbox,
            events,
            backends: Arc::new(backends),
            stats: PrimaryStats::default(),
            join_wanted: Arc::new(AtomicBool::new(true)),
            join_target: Arc::new(Mutex::new(None)),
            protected_since: Instant::now(),
            last_report: Instant::now(),
        }
    }

    /// The function the ack reader calls to let an output leave.
    pub fn release_fn(&self) -> ReleaseFn {
        let backends = self.backends.clone();
        Arc::new(move |device, id| {
            if let Some(Some(link)) = backends.get(device) {
                link.release(id);
            }
        })
    }

    /// The replication summary (None without a backup).
    pub fn summary(&self) -> Option<String> {
        self.link
            .as_ref()
            .map(|l| l.shared.summary(self.protected_since))
    }

    /// Logs the summary every `REPORT_EVERY`.
    pub fn report(&mut self) {
        if self.last_report.elapsed() >= REPORT_EVERY {
            self.last_report = Instant::now();
            if let Some(s) = self.summary() {
                log::info!("{s}");
            }
        }
    }

    /// The epoch for a backup that is joining now (sent in the state transfer).
    pub fn new_epoch(&self) -> u64 {
        next_epoch(self.epoch)
    }

    pub fn attach(&mut self, link: PrimaryLink, epoch: u64) {
        self.protected_since = Instant::now();
        self.link = Some(link);
        self.epoch = epoch;
        self.join_wanted.store(false, Ordering::SeqCst);
    }

    /// Starts reading and watching a joining backup's connection.
    pub fn open_link(&self, stream: super::link::LinkStream) -> std::io::Result<PendingLink> {
        PendingLink::open(
            stream,
            self.release_fn(),
            self.failover.timeout,
            self.inbox.clone(),
            &self.events,
        )
    }

    /// The VMM wrote guest memory on the guest's behalf (a completion): pre-copy must send
    /// those pages again.
    pub fn mark_dirty(&self, gpa: u64, len: usize) {
        if let Some(d) = &self.dirty {
            d.mark(gpa, len);
        }
    }

    /// A join's convergence throttle: sleeps so that the guest runs only the share of the
    /// time the pre-copy allows (called at landmarks). Invisible to the guest but as time.
    pub fn throttle_join(&mut self) {
        let pct = self
            .join
            .as_ref()
            .map_or(0, |j| j.progress.throttle_pct.load(Ordering::Relaxed));
        if pct == 0 {
            self.ran_since = None;
            return;
        }
        let since = *self.ran_since.get_or_insert_with(Instant::now);
        let ran = since.elapsed();
        if ran >= Duration::from_millis(2) {
            let pause = ran * pct / (100 - pct.min(99));
            std::thread::sleep(pause);
            self.ran_since = Some(Instant::now());
        }
    }

    /// The join attempt failed: let the joiner try again.
    pub fn join_failed(&mut self) {
        if let Some(j) = self.join.take() {
            j.link.close();
        }
        if let Some(d) = &self.dirty {
            d.stop();
        }
        self.ran_since = None;
        self.join_wanted.store(true, Ordering::SeqCst);
    }

    pub fn protected(&self) -> bool {
        self.link.is_some()
    }

    /// Starts the joiner (ft::joiner), looking for a backup at `peer` if given.
    pub fn start_joiner(&self, peer: Option<SocketAddr>) {
        *lock(&self.join_target) = peer;
        let security = &self.failover.security;
        let handshake = match security.is_tls() {
            true => match super::link::handshake_thread(security.clone()) {
                Ok(tx) => Some(tx),
                Err(e) => {
                    log::error!(
                        "ft: cannot start the TLS handshake thread: {e}; no backup can join"
                    );
                    return;
                }
            },
            false => None,
        };
        let started = joiner::start(
            &self.events,
            self.join_target.clone(),
            self.join_wanted.clone(),
            self.inbox.clone(),
            handshake,
        );
        if let Err(e) = started {
            log::error!("ft: cannot start the joiner: {e}; no backup can join");
        }
    }

    /// The control socket's `protect`: look for a backup at `peer` from now on (a survivor
    /// whose old peer's host is gone for good). Refused while protected or arbitrating.
    pub fn protect(&mut self, peer: SocketAddr) -> Result<(), ProtectError> {
        if self.link.is_some() {
            return Err(ProtectError::Protected);
        }
        if self.join.is_some() {
            return Err(ProtectError::Joining);
        }
        if self.arbitration.is_some() {
            return Err(ProtectError::Arbitrating);
        }
        *lock(&self.join_target) = Some(peer);
        self.join_wanted.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Notices a dead link and asks the arbiter whether this side may go on alone; applies
    /// the answer once it is there. Until then outputs stay held (the backup may be taking
    /// over without them) while the guest keeps running. `Err`: the other side won; halt.
    pub fn check_link(&mut self) -> Result<(), EngineStop> {
        if let Some(link) = self.link.as_ref().filter(|l| !l.is_alive()) {
            let why = lock(&link.shared.diverged)
                .clone()
                .unwrap_or_else(|| "the backup is gone".to_string());
            log::error!(
                "ft: lost the backup ({why}); outputs held; asking the arbiter for epoch {}",
                self.epoch
            );
            self.link = None;
            self.arbitration = Some(Arbitration::start(
                &self.failover,
                self.epoch,
                self.inbox.clone(),
                &self.events,
            ));
        }
        let Some(verdict) = self.arbitration.as_ref().and_then(|a| a.verdict()) else {
            return Ok(());
        };
        let asked = self.arbitration.take().map(|a| a.started.elapsed());
        match verdict {
            Verdict::Won => {
                METRICS
                    .ft_arbiter_decisions
                    .with_label_values(&["won"])
                    .inc();
                log::error!(
                    "ft: won epoch {} at the arbiter ({:.1} ms): primary running UNPROTECTED",
                    self.epoch,
                    asked.unwrap_or_default().as_secs_f64() * 1e3
                );
                for (device, &id) in self.last_output.iter().enumerate() {
                    if id > 0 {
                        self.release_now(device, id);
                    }
                }
                self.join_wanted.store(true, Ordering::SeqCst);
                Ok(())
            }
            Verdict::Lost { owner, epoch } => {
                METRICS
                    .ft_arbiter_decisions
                    .with_label_values(&["lost"])
                    .inc();
                Err(EngineStop::LostArbitration { epoch, owner })
            }
        }
    }

    fn release_now(&self, device: usize, id: u64) {
        if let Some(Some(link)) = self.backends.get(device) {
            link.release(id);
        }
    }

    /// Flow control: blocks while the backup is too far behind (VMware FT slows the primary).
    pub fn throttle(&mut self) {
        LogSink::flush(self);
        let Some(link) = &self.link else { return };
        if link.unacked() > MAX_UNACKED {
            let start = Instant::now();
            // Woken by the ack reader; the bound is for a wake-up lost to a dying link.
            link.shared
                .wait_for_acks(MAX_UNACKED, Duration::from_millis(100));
            self.stats.throttled += start.elapsed();
        }
        release_acked(&link.shared, &self.release_fn());
    }

    pub fn link(&self) -> Option<&PrimaryLink> {
        self.link.as_ref()
    }
}

impl LogSink for Primary {
    fn connected(&self) -> bool {
        self.link.is_some()
    }

    fn send(&mut self, landmark: u64, record: Record) -> bool {
        self.send_with(landmark, record, None)
    }

    /// With a link (even one that just died) or an arbitration under way the output waits:
    /// for the backup's ack, or for the arbiter's verdict.
    fn send_output(&mut self, landmark: u64, record: Record, slot: usize, id: u64) -> bool {
        self.stats.outputs += 1;
        if let Some(last) = self.last_output.get_mut(slot) {
            *last = (*last).max(id);
        }
        let may_wait = self.link.is_some() || self.arbitration.is_some();
        let sent = self.send_with(landmark, record, Some((slot, id)));
        if !sent && !may_wait {
            // No backup, and none that could take over: nothing to wait for.
            self.release_now(slot, id);
        }
        sent
    }

    fn wrote(&self, gpa: u64, len: usize) {
        self.mark_dirty(gpa, len);
    }

    /// Hands this landmark's records to the logging channel. Must run before the vCPU enters
    /// the guest or blocks, or the backup (and the outputs waiting for it) would wait too.
    fn flush(&mut self) {
        if let Some(link) = &mut self.link {
            link.flush();
        }
    }

    fn check(&mut self) -> Result<(), EngineStop> {
        self.check_link()
    }

    fn pace(&mut self) {
        self.throttle();
        self.throttle_join();
        self.report();
    }
}

impl Primary {
    fn send_with(&mut self, landmark: u64, record: Record, output: Option<(usize, u64)>) -> bool {
        let Some(link) = &mut self.link else {
            return false;
        };
        link.shared.landmark.store(landmark, Ordering::Relaxed);
        let sent = link.send(record, output);
        if sent {
            self.stats.records += 1;
        }
        sent
    }
}
