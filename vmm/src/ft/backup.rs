//! The backup's replayer: hands the vCPU thread the primary's log entries landmark by
//! landmark. The backup may leave landmark L only once it holds an entry for a later
//! landmark: only then does it know that it has every entry for L (the log is in landmark
//! order). So it always lags at least one entry behind, as the VMware FT design requires.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::channel::BackupShared;
use super::record::{ExitSignature, Record};
use super::signature::{describe, hlt_sig, RunningHash};
use crate::config::FailoverConfig;
use crate::sync::lock;

/// Why replay stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayStop {
    /// The backup is not where the primary was.
    Diverged { landmark: u64, reason: String },
    /// The logging channel is gone (the primary died, or the network failed).
    PrimaryLost { landmark: u64 },
}

/// What a backup needs to go live (vstate::takeover).
#[derive(Clone)]
pub struct TakeoverPlan {
    pub failover: FailoverConfig,
    /// Each virtio slot's FT control socket, connected as `Role::Primary` when going live
    /// (until then the backends are not told anything: they stay idle).
    pub ft_sockets: Vec<Option<PathBuf>>,
    /// Where to look for a new backup once live (re-protection).
    pub peer: Option<SocketAddr>,
    /// The dirty log a re-protecting join uses once live.
    pub dirty: Option<Arc<super::dirty::DirtyLog>>,
}

pub struct Backup {
    pub shared: Arc<BackupShared>,
    pub hash: RunningHash,
    pub last_sig: ExitSignature,
    pub applied: u64,
    /// The pairing's epoch (from the state transfer's `Hello`): the arbiter flag to ask for.
    pub epoch: u64,
    /// The newest VM clock value the log gave (PIT accesses): going live continues from it.
    pub last_clock_ns: u64,
    pub plan: TakeoverPlan,
}

impl Backup {
    pub fn new(shared: Arc<BackupShared>, plan: TakeoverPlan) -> Self {
        Backup {
            shared,
            hash: RunningHash::default(),
            last_sig: hlt_sig(),
            applied: 0,
            epoch: 0,
            last_clock_ns: 0,
            plan,
        }
    }

    pub fn on_exit(&mut self, sig: ExitSignature) {
        self.hash.add(&sig);
        self.last_sig = sig;
    }

    /// Like `next_at`, without blocking: `Ok(None)` when the log does not tell yet.
    pub fn poll_at(&mut self, landmark: u64) -> Result<Option<Option<Record>>, ReplayStop> {
        loop {
            // `alive` first: the reader queues its last record before it clears `alive`, so
            // a dead channel with an empty queue means that every record has been taken.
            let alive = self.shared.alive.load(Ordering::SeqCst);
            let front = {
                let q = lock(&self.shared.queue);
                q.front().map(|(_, r)| r.entry_landmark())
            };
            match front {
                None if !alive => return Err(ReplayStop::PrimaryLost { landmark }),
                None => return Ok(None),
                Some(Some(l)) if l < landmark => {
                    let r = self.pop();
                    return Err(self.diverged(
                        landmark,
                        format!("entry for past landmark {l} left over: {r:?}"),
                    ));
                }
                Some(Some(l)) if l > landmark => return Ok(Some(None)),
                Some(Some(_)) => return Ok(Some(self.pop())),
                Some(None) => {
                    self.pop();
                }
            }
        }
    }

    /// Takes the next record if it is an entry for `landmark`. Returns `None` once the next
    /// entry is for a later landmark, i.e. when `landmark` is complete. Blocks until it knows.
    pub fn next_at(&mut self, landmark: u64) -> Result<Option<Record>, ReplayStop> {
        loop {
            if let Some(r) = self.poll_at(landmark)? {
                return Ok(r);
            }
            self.wait_for_records();
        }
    }

    /// Blocks until a record is queued or the channel is gone.
    fn wait_for_records(&self) {
        let mut q = lock(&self.shared.queue);
        while q.is_empty() && self.shared.alive.load(Ordering::SeqCst) {
            q = self
                .shared
                .arrived
                .wait(q)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The next record of any kind (state transfer), blocking.
    pub fn next_record(&mut self) -> Result<Record, ReplayStop> {
        self.wait_for_records();
        self.pop().ok_or(ReplayStop::PrimaryLost { landmark: 0 })
    }

    fn pop(&mut self) -> Option<Record> {
        self.applied += 1;
        lock(&self.shared.queue).pop_front().map(|(_, r)| r)
    }

    /// Checks an entry's signature against the backup's own exit at the same landmark.
    pub fn check_sig(&self, landmark: u64, expected: &ExitSignature) -> Result<(), ReplayStop> {
        if *expected != self.last_sig {
            return Err(self.diverged(
                landmark,
                format!(
                    "expected {}, got {}",
                    describe(expected),
                    describe(&self.last_sig)
                ),
            ));
        }
        Ok(())
    }

    /// Reports a divergence to the primary and returns the stop reason.
    pub fn diverged(&self, landmark: u64, reason: String) -> ReplayStop {
        let _ = self.shared.reply(&Record::Diverged {
            landmark,
            reason: reason.chars().take(1000).collect(),
        });
        ReplayStop::Diverged { landmark, reason }
    }
}
