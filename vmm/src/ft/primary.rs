//! The primary's recorder: everything non-deterministic the vCPU thread applies at a landmark
//! is also sent to the backup, tagged with the landmark and that exit's signature. Without a
//! backup the recorder only keeps the running signature hash and releases outputs at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::channel::{release_acked, PrimaryLink, ReleaseFn};
use super::record::{ExitSignature, Record};
use super::signature::{hlt_sig, RunningHash};
use super::{DEV_SIGNATURES, EV_SIGNATURE_HASH};
use crate::devices::virtio::ft_link::FtLink;

/// How often, at most, a landmark goes by without a record: the backup may only run up to the
/// newest landmark it has a record for, so this bounds its lag while the log is quiet.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1);
/// Flow control: the vCPU waits at a landmark while more records than this are unacknowledged.
pub const MAX_UNACKED: u64 = 20_000;

pub struct Primary {
    link: Option<PrimaryLink>,
    pub hash: RunningHash,
    pub last_sig: ExitSignature,
    last_record_landmark: u64,
    last_record_at: Instant,
    /// FT control links to the backends, by virtio slot.
    pub backends: Arc<Vec<Option<Arc<FtLink>>>>,
    pub stats: PrimaryStats,
    /// Set while the primary has no backup: the joiner thread then tries to reach one.
    pub join_wanted: Arc<AtomicBool>,
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
}

impl Primary {
    pub fn new(backends: Vec<Option<Arc<FtLink>>>) -> Self {
        Primary {
            link: None,
            hash: RunningHash::default(),
            last_sig: hlt_sig(),
            last_record_landmark: 0,
            last_record_at: Instant::now(),
            backends: Arc::new(backends),
            stats: PrimaryStats::default(),
            join_wanted: Arc::new(AtomicBool::new(true)),
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

    pub fn attach(&mut self, link: PrimaryLink) {
        self.protected_since = Instant::now();
        self.link = Some(link);
        self.join_wanted.store(false, Ordering::SeqCst);
    }

    /// The join attempt failed: let the joiner try again.
    pub fn join_failed(&self) {
        self.join_wanted.store(true, Ordering::SeqCst);
    }

    pub fn protected(&self) -> bool {
        self.link.is_some()
    }

    /// Every landmark passes through here.
    pub fn on_exit(&mut self, sig: ExitSignature) {
        self.hash.add(&sig);
        self.last_sig = sig;
    }

    /// Drops a dead link: from now on the VM runs unprotected.
    pub fn check_link(&mut self) {
        let Some(link) = &self.link else { return };
        if link.is_alive() {
            return;
        }
        let why = link
            .shared
            .diverged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        log::error!(
            "ft: primary running UNPROTECTED: {}",
            why.unwrap_or_else(|| "the backup is gone".to_string())
        );
        // The link's writer thread releases the outputs that were waiting for the backup.
        self.link = None;
        self.join_wanted.store(true, Ordering::SeqCst);
    }

    /// Sends a landmark entry (no-op without a backup).
    pub fn record(&mut self, landmark: u64, record: Record) {
        self.send(landmark, record, None);
    }

    fn release_now(&self, device: usize, id: u64) {
        if let Some(Some(link)) = self.backends.get(device) {
            link.release(id);
        }
    }

    fn send(&mut self, landmark: u64, record: Record, output: Option<(usize, u64)>) -> bool {
        let Some(link) = &self.link else { return false };
        link.shared.landmark.store(landmark, Ordering::Relaxed);
        let sent = link.send(record, output);
        if sent {
            self.stats.records += 1;
            self.last_record_landmark = landmark;
            self.last_record_at = Instant::now();
        }
        sent
    }

    /// The signature hash as a checkpoint record: lets the backup run up to `landmark` and
    /// check every landmark before it. Sent when the log has been quiet, or when `force`d
    /// (before the primary blocks in `hlt` or pauses).
    pub fn checkpoint(&mut self, landmark: u64, force: bool) {
        if self.link.is_none() || landmark == self.last_record_landmark && !force {
            return;
        }
        if force || self.last_record_at.elapsed() >= CHECKPOINT_EVERY {
            let sig = self.last_sig;
            let arg = self.hash.0;
            self.record(
                landmark,
                Record::DeviceEvent {
                    landmark,
                    sig,
                    device: DEV_SIGNATURES,
                    event: EV_SIGNATURE_HASH,
                    arg,
                },
            );
        }
    }

    /// An output announced by backend `device`: logged with its digest, released once the
    /// backup has the log up to here (or at once when unprotected).
    pub fn output(&mut self, landmark: u64, device: usize, packed: u16, id: u64, digest: [u8; 32]) {
        self.stats.outputs += 1;
        let record = Record::OutputDigest {
            landmark,
            device: packed,
            digest,
        };
        if !self.send(landmark, record, Some((device, id))) {
            // No backup (or it just went away): nothing to wait for.
            self.release_now(device, id);
        }
    }

    /// Flow control: blocks while the backup is too far behind (VMware FT slows the primary).
    pub fn throttle(&mut self) {
        let Some(link) = &self.link else { return };
        let start = Instant::now();
        while link.is_alive() && link.unacked() > MAX_UNACKED {
            std::thread::sleep(Duration::from_micros(200));
        }
        self.stats.throttled += start.elapsed();
        release_acked(&link.shared, &self.release_fn());
    }

    pub fn link(&self) -> Option<&PrimaryLink> {
        self.link.as_ref()
    }
}
