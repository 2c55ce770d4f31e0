//! The backup: its replayer reads the records the logging channel's reader queued
//! (ft::channel), and what it needs to go live (ft::takeover).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::channel::BackupShared;
use super::engine::{LogSource, Peek, Replayer, Trace};
use super::record::Record;
use crate::config::FailoverConfig;
use crate::sync::lock;

/// What a backup needs to go live (ft::takeover).
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
    /// The event loop, where the channel's heartbeat and watchdog, the arbiter's questions
    /// and (once live) the joiner run.
    pub events: crate::event_loop::Registrar,
}

/// The receive queue of the logging channel, as the replayer's log.
pub struct BackupLog(pub Arc<BackupShared>);

impl LogSource for BackupLog {
    fn peek(&self) -> Peek {
        // `alive` first: the reader queues its last record before it clears `alive`, so a
        // dead channel with an empty queue means that every record has been taken.
        let alive = self.0.alive.load(Ordering::SeqCst);
        match lock(&self.0.queue).front() {
            None if alive => Peek::Empty,
            None => Peek::Closed,
            Some((_, r)) => r.entry_landmark().map_or(Peek::Other, Peek::Entry),
        }
    }

    fn pop(&mut self) -> Option<Record> {
        lock(&self.0.queue).pop_front().map(|(_, r)| r)
    }

    fn wait(&self) {
        let mut q = lock(&self.0.queue);
        while q.is_empty() && self.0.alive.load(Ordering::SeqCst) {
            q = self.0.arrived.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn report(&self, record: &Record) {
        let _ = self.0.reply(record);
    }

    fn reached(&self, landmark: u64) {
        self.0.applied_landmark.store(landmark, Ordering::Relaxed);
    }
}

pub struct Backup {
    pub replayer: Replayer<BackupLog>,
    /// The pairing's epoch (from the state transfer's `Hello`): the arbiter flag to ask for.
    pub epoch: u64,
    pub plan: TakeoverPlan,
}

impl Backup {
    pub fn new(shared: Arc<BackupShared>, plan: TakeoverPlan) -> Self {
        Backup {
            replayer: Replayer::new(BackupLog(shared), Trace::default()),
            epoch: 0,
            plan,
        }
    }

    pub fn shared(&self) -> &Arc<BackupShared> {
        &self.replayer.log.0
    }

    /// The next record of any kind (state transfer), blocking; `None` once the channel is
    /// gone.
    pub fn next_record(&mut self) -> Option<Record> {
        self.replayer.log.wait();
        self.replayer.log.pop()
    }
}
