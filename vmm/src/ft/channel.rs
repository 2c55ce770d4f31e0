//! The logging channel's two ends (docs/PROTOCOL.md, "Logging channel"): one TCP connection,
//! records primary -> backup, acknowledgements and heartbeats backup -> primary.
//!
//! Primary: the vCPU thread hands records to a writer thread (never blocking on the network);
//! the writer numbers, encodes and sends them and remembers which outputs wait for which
//! sequence number; a reader thread takes the backup's acks and releases those outputs.
//! Backup: a reader thread queues records for the vCPU thread and acknowledges each batch.

use super::link::LinkStream;
use std::collections::VecDeque;
use std::io::BufWriter;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::record::{Record, RecordReader, RecordWriter};
use super::timers;
use crate::event_loop::{writable_now, Registrar};
use crate::inbox::{DeviceEvent, Inbox};
use crate::metrics::{set_count, METRICS};
use crate::sync::lock;

/// Heartbeat period in both directions when nothing else is sent.
pub const HEARTBEAT: Duration = Duration::from_millis(50);

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(crate::stats::millis)
        .unwrap_or(0)
}

/// An output waiting for the backup: released by `release` once the ack covers `seq`.
pub struct HeldOutput {
    pub seq: u64,
    pub device: usize,
    pub id: u64,
    pub since: Instant,
}

/// What the primary's threads share.
pub struct PrimaryShared {
    pub acked: AtomicU64,
    pub sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub alive: AtomicBool,
    pub landmark: AtomicU64,
    pub held: Mutex<VecDeque<HeldOutput>>,
    pub last_heard: Mutex<Instant>,
    /// Set by the reader when the backup reports a divergence.
    pub diverged: Mutex<Option<String>>,
    /// How long released outputs were held (output rule), in microseconds.
    pub hold: Mutex<crate::stats::Samples>,
    /// When the primary sent its entries for each landmark (for the backup's lag in time).
    pub history: Mutex<VecDeque<(u64, Instant)>>,
    /// The landmark the backup last reported (heartbeat).
    pub backup_landmark: AtomicU64,
    /// How far behind the backup was, in time, at each of its heartbeats.
    pub lag: Mutex<crate::stats::Samples>,
    /// Flow control: signalled when an ack arrives or the link dies (`wait_for_acks`).
    flow: Mutex<()>,
    acks: Condvar,
}

impl PrimaryShared {
    fn unacked(&self) -> u64 {
        self.sent
            .load(Ordering::SeqCst)
            .saturating_sub(self.acked.load(Ordering::SeqCst))
    }

    /// Flow control: blocks while more than `max` records are unacknowledged and the link is
    /// up. The ack reader wakes it; `timeout` bounds one wait in case a wake-up is missed.
    pub fn wait_for_acks(&self, max: u64, timeout: Duration) {
        let mut guard = lock(&self.flow);
        while self.alive.load(Ordering::SeqCst) && self.unacked() > max {
            guard = match self.acks.wait_timeout(guard, timeout) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Wakes a vCPU waiting in `wait_for_acks` (an ack arrived, or the link died).
    fn wake_flow(&self) {
        drop(lock(&self.flow));
        self.acks.notify_all();
    }

    /// Marks the link dead and wakes whoever waits on it.
    fn die(&self) {
        self.alive.store(false, Ordering::SeqCst);
        self.wake_flow();
    }

    /// A one-line summary for logs and `--stats`.
    pub fn summary(&self, since: Instant) -> String {
        let secs = since.elapsed().as_secs_f64().max(1e-9);
        let sent = self.sent.load(Ordering::SeqCst);
        let bytes = self.bytes_sent.load(Ordering::Relaxed);
        let lag_lm = self
            .landmark
            .load(Ordering::Relaxed)
            .saturating_sub(self.backup_landmark.load(Ordering::Relaxed));
        let pct = |s: &Mutex<crate::stats::Samples>, p| {
            lock(s)
                .percentile(p)
                .map_or("-".to_string(), |v| v.to_string())
        };
        format!(
            "ft: records={sent} records_per_s={:.0} log_mbit_per_s={:.3} backup_lag_landmarks={lag_lm} backup_lag_us_p50={} backup_lag_us_p99={} output_hold_us_p50={} output_hold_us_p99={}",
            sent as f64 / secs,
            bytes as f64 * 8.0 / secs / 1e6,
            pct(&self.lag, 50),
            pct(&self.lag, 99),
            pct(&self.hold, 50),
            pct(&self.hold, 99),
        )
    }
}

/// A record for the writer thread, with the output it protects, if any.
pub struct Outgoing {
    pub record: Record,
    pub output: Option<(usize, u64)>,
}

/// The primary's end: the vCPU thread's handle.
pub struct PrimaryLink {
    tx: mpsc::Sender<Vec<Outgoing>>,
    /// Records of the current landmark, handed to the writer together by `flush`.
    pending: Vec<Outgoing>,
    pub shared: Arc<PrimaryShared>,
}

/// Called with (device, output id) for every output whose log position the backup acked.
pub type ReleaseFn = Arc<dyn Fn(usize, u64) + Send + Sync>;

/// A primary's end of a logging channel whose state transfer is still under way: the
/// backup's acks and heartbeats are already read and watched (so that a backup that stops
/// answering during the transfer is noticed), while the transfer owns the write side.
pub struct PendingLink {
    stream: LinkStream,
    shared: Arc<PrimaryShared>,
    inbox: Arc<Inbox>,
}

impl PendingLink {
    /// Starts the ack-reader thread and the watchdog (on the event loop) on `stream`. When
    /// the link dies, `inbox` gets an `FtWake`.
    pub fn open(
        stream: LinkStream,
        release: ReleaseFn,
        timeout: Duration,
        inbox: Arc<Inbox>,
        events: &Registrar,
    ) -> std::io::Result<Self> {
        stream.set_nodelay(true)?;
        let shared = Arc::new(PrimaryShared {
            acked: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            alive: AtomicBool::new(true),
            landmark: AtomicU64::new(0),
            held: Mutex::new(VecDeque::new()),
            last_heard: Mutex::new(Instant::now()),
            diverged: Mutex::new(None),
            hold: Mutex::new(crate::stats::Samples::default()),
            history: Mutex::new(VecDeque::new()),
            backup_landmark: AtomicU64::new(0),
            lag: Mutex::new(crate::stats::Samples::default()),
            flow: Mutex::new(()),
            acks: Condvar::new(),
        });
        let reader = stream.try_clone()?;
        let watched = stream.try_clone()?;
        let r = shared.clone();
        let reader_inbox = inbox.clone();
        std::thread::Builder::new()
            .name("ft-ack-reader".into())
            .spawn(move || {
                crate::seccomp::enter(crate::seccomp::ThreadKind::Ft);
                ack_loop(reader, &r, &release);
                r.die();
                reader_inbox.post(DeviceEvent::FtWake);
            })?;
        let (heard, up) = (shared.clone(), shared.clone());
        timers::watch(
            events,
            "backup",
            watched,
            timeout,
            move || *lock(&heard.last_heard),
            move || up.alive.load(Ordering::SeqCst),
        )
        .map_err(std::io::Error::other)?;
        Ok(PendingLink {
            stream,
            shared,
            inbox,
        })
    }

    /// The stream the state transfer writes to.
    pub fn transfer_stream(&self) -> std::io::Result<LinkStream> {
        self.stream.try_clone()
    }

    /// What the transfer counts its records in (acks are checked against it).
    pub fn shared(&self) -> Arc<PrimaryShared> {
        self.shared.clone()
    }

    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Ends the link (a failed join): the reader and watchdog threads end with it.
    pub fn close(&self) {
        self.shared.die();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// The transfer is complete: starts the writer thread, numbering after `last_seq`.
    pub fn start(self, last_seq: u64) -> std::io::Result<PrimaryLink> {
        let PendingLink {
            stream,
            shared,
            inbox,
        } = self;
        shared.sent.store(last_seq, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel::<Vec<Outgoing>>();
        let w = shared.clone();
        // Outputs still held when the link dies stay held: only the arbiter's verdict may let
        // them leave (ft::primary), since the backup may be going live without them.
        std::thread::Builder::new()
            .name("ft-log-writer".into())
            .spawn(move || {
                crate::seccomp::enter(crate::seccomp::ThreadKind::Ft);
                writer_loop(stream, last_seq + 1, &rx, &w);
                w.die();
                inbox.post(DeviceEvent::FtWake);
            })?;
        Ok(PrimaryLink {
            tx,
            pending: Vec::new(),
            shared,
        })
    }
}

impl PrimaryLink {
    /// Queues a record for the next `flush`; returns false if the link is down.
    pub fn send(&mut self, record: Record, output: Option<(usize, u64)>) -> bool {
        if !self.is_alive() {
            return false;
        }
        self.pending.push(Outgoing { record, output });
        true
    }

    /// Hands the queued records to the writer thread (one wake-up per landmark, not one per
    /// record). Called before the vCPU runs the guest or blocks.
    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            // If the writer is gone the link is dead; check_link notices.
            let _ = self.tx.send(batch);
        }
    }

    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Records sent but not yet acknowledged.
    pub fn unacked(&self) -> u64 {
        self.shared.unacked()
    }
}

fn writer_loop(
    stream: LinkStream,
    first_seq: u64,
    rx: &mpsc::Receiver<Vec<Outgoing>>,
    shared: &PrimaryShared,
) {
    let mut w = RecordWriter::starting_at(BufWriter::with_capacity(256 << 10, stream), first_seq);
    loop {
        if !shared.alive.load(Ordering::SeqCst) {
            return;
        }
        let first = match rx.recv_timeout(HEARTBEAT) {
            Ok(batch) => batch,
            Err(RecvTimeoutError::Timeout) => vec![Outgoing {
                record: Record::Heartbeat {
                    landmark: shared.landmark.load(Ordering::SeqCst),
                    unix_ms: unix_ms(),
                },
                output: None,
            }],
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Send everything queued in one go, then flush once.
        let mut batches = vec![first];
        batches.extend(rx.try_iter());
        for o in batches.into_iter().flatten() {
            // An output is registered before its record can reach the backup, so that the ack
            // that covers it always finds it (the BufWriter may send before the flush below).
            if let Some((device, id)) = o.output {
                let held = HeldOutput {
                    seq: w.last_seq() + 1,
                    device,
                    id,
                    since: Instant::now(),
                };
                lock(&shared.held).push_back(held);
            }
            // Counted as sent before it is written: the BufWriter may send it, and the
            // backup ack it, before `write` returns (acks beyond `sent` are refused).
            shared.sent.store(w.last_seq() + 1, Ordering::SeqCst);
            if let Err(e) = w.write(&o.record) {
                log::error!("ft: logging channel write failed: {e}");
                return;
            }
            METRICS.record(true, o.record.kind());
            if let Some(l) = o.record.entry_landmark() {
                let mut h = lock(&shared.history);
                if h.back().is_none_or(|&(last, _)| last < l) {
                    h.push_back((l, Instant::now()));
                    if h.len() > 200_000 {
                        h.pop_front();
                    }
                }
            }
        }
        let before = w.get_ref().buffer().len() as u64;
        if let Err(e) = w.flush() {
            log::error!("ft: logging channel flush failed: {e}");
            return;
        }
        shared.bytes_sent.fetch_add(before, Ordering::Relaxed);
        METRICS.ft_log_bytes_sent.inc_by(before);
    }
}

/// Releases every held output whose record the backup has acknowledged: one `Release` per
/// backend, for the newest such output (a release covers every output before it).
pub fn release_acked(shared: &PrimaryShared, release: &ReleaseFn) {
    let acked = shared.acked.load(Ordering::SeqCst);
    let mut newest: Vec<(usize, u64)> = Vec::new();
    {
        let mut held = lock(&shared.held);
        let mut hold = lock(&shared.hold);
        while let Some(h) = held.pop_front() {
            if h.seq > acked {
                held.push_front(h);
                break;
            }
            hold.record(h.since.elapsed());
            METRICS
                .ft_output_hold
                .observe(h.since.elapsed().as_secs_f64());
            match newest.iter_mut().find(|(d, _)| *d == h.device) {
                Some(entry) => entry.1 = entry.1.max(h.id),
                None => newest.push((h.device, h.id)),
            }
        }
    }
    for (device, id) in newest {
        release(device, id);
    }
}

fn ack_loop(stream: LinkStream, shared: &PrimaryShared, release: &ReleaseFn) {
    let mut reader = RecordReader::new(stream);
    loop {
        match reader.next() {
            Ok(Some((_, Record::Ack { seq }))) => {
                // Never trust a number this side did not issue: an ack beyond what was sent
                // would release outputs whose log the backup does not have.
                let sent = shared.sent.load(Ordering::SeqCst);
                if seq > sent {
                    log::error!(
                        "ft: the backup acknowledged record {seq}, but only {sent} were sent: protocol error; closing the logging channel"
                    );
                    return;
                }
                shared.acked.fetch_max(seq, Ordering::SeqCst);
                shared.wake_flow();
                *lock(&shared.last_heard) = Instant::now();
                release_acked(shared, release);
            }
            Ok(Some((_, Record::Heartbeat { landmark, .. }))) => {
                *lock(&shared.last_heard) = Instant::now();
                shared.backup_landmark.store(landmark, Ordering::Relaxed);
                set_count(&METRICS.ft_backup_landmark, landmark);
                // Lag in time: how long ago the primary logged the landmark the backup is at.
                let mut h = lock(&shared.history);
                let mut at = None;
                while h.front().is_some_and(|&(l, _)| l <= landmark) {
                    at = h.pop_front().map(|(_, t)| t);
                }
                let lag = if h.is_empty() {
                    Duration::ZERO
                } else {
                    at.map_or(Duration::ZERO, |t| t.elapsed())
                };
                lock(&shared.lag).record(lag);
                METRICS.ft_lag.observe(lag.as_secs_f64());
            }
            Ok(Some((_, Record::Diverged { landmark, reason }))) => {
                let msg = format!("backup diverged at landmark {landmark}: {reason}");
                log::error!("ft: {msg}");
                *lock(&shared.diverged) = Some(msg);
                return;
            }
            Ok(Some((_, other))) => {
                log::error!("ft: unexpected record from the backup: {:?}", other.kind());
                return;
            }
            Ok(None) => {
                log::warn!("ft: the backup closed the logging channel");
                return;
            }
            Err(e) => {
                log::error!("ft: logging channel: {e}");
                return;
            }
        }
    }
}

/// The backup's end: records in arrival order for the vCPU thread.
pub struct BackupShared {
    pub queue: Mutex<VecDeque<(u64, Record)>>,
    pub arrived: Condvar,
    pub alive: AtomicBool,
    /// Landmark of the newest landmark entry received.
    pub newest_landmark: AtomicU64,
    pub received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub last_heard: Mutex<Instant>,
    /// The landmark the backup's vCPU has reached (reported in heartbeats).
    pub applied_landmark: AtomicU64,
    writer: Mutex<RecordWriter<LinkStream>>,
}

impl BackupShared {
    /// Sends a record to the primary (acks, heartbeats, divergence reports).
    pub fn reply(&self, record: &Record) -> bool {
        let mut w = lock(&self.writer);
        w.write(record).and_then(|_| w.flush()).is_ok()
    }

    /// `reply` for the event loop, which must not block: skipped (true) while the reader is
    /// writing an ack (which tells the primary as much) or the socket has no room (the
    /// primary is not reading; its watchdog will tell). False once a write failed.
    pub fn try_reply(&self, record: &Record) -> bool {
        let Ok(mut w) = self.writer.try_lock() else {
            return true;
        };
        if !writable_now(w.get_ref().as_raw_fd()) {
            return true;
        }
        w.write(record).and_then(|_| w.flush()).is_ok()
    }
}

/// Starts the backup's reader thread (which also wakes the vCPU thread through `inbox` whenever
/// records arrive), and its heartbeat and watchdog on the event loop. Only the reader marks
/// the channel dead,
/// after its last record is queued: a vCPU that sees it dead with an empty queue has
/// everything the primary's acknowledged outputs depend on.
pub fn start_backup(
    stream: LinkStream,
    inbox: Arc<Inbox>,
    timeout: Duration,
    events: &Registrar,
) -> std::io::Result<Arc<BackupShared>> {
    stream.set_nodelay(true)?;
    let reader = stream.try_clone()?;
    let watched = stream.try_clone()?;
    let shared = Arc::new(BackupShared {
        queue: Mutex::new(VecDeque::new()),
        arrived: Condvar::new(),
        alive: AtomicBool::new(true),
        newest_landmark: AtomicU64::new(0),
        received: AtomicU64::new(0),
        bytes_received: AtomicU64::new(0),
        last_heard: Mutex::new(Instant::now()),
        applied_landmark: AtomicU64::new(0),
        writer: Mutex::new(RecordWriter::new(stream)),
    });
    let r = shared.clone();
    std::thread::Builder::new()
        .name("ft-log-reader".into())
        .spawn(move || {
            crate::seccomp::enter(crate::seccomp::ThreadKind::Ft);
            receive_loop(reader, &r, &inbox);
            r.alive.store(false, Ordering::SeqCst);
            r.arrived.notify_all();
            inbox.post(DeviceEvent::FtWake);
        })?;
    let (heard, up) = (shared.clone(), shared.clone());
    timers::watch(
        events,
        "primary",
        watched,
        timeout,
        move || *lock(&heard.last_heard),
        move || up.alive.load(Ordering::SeqCst),
    )
    .map_err(std::io::Error::other)?;
    timers::backup_heartbeat(events, shared.clone()).map_err(std::io::Error::other)?;
    Ok(shared)
}

fn receive_loop(stream: LinkStream, shared: &BackupShared, inbox: &Inbox) {
    let mut reader = RecordReader::new(stream);
    let mut batch: Vec<(u64, Record)> = Vec::new();
    loop {
        let before = reader.bytes_decoded();
        let (seq, record) = match reader.next() {
            Ok(Some(r)) => r,
            Ok(None) => {
                log::warn!("ft: the primary closed the logging channel");
                return queue_batch(shared, inbox, &mut batch);
            }
            Err(e) => {
                log::error!("ft: logging channel: {e}");
                return queue_batch(shared, inbox, &mut batch);
            }
        };
        *lock(&shared.last_heard) = Instant::now();
        let bytes = reader.bytes_decoded() - before;
        shared.bytes_received.fetch_add(bytes, Ordering::Relaxed);
        METRICS.ft_log_bytes_received.inc_by(bytes);
        METRICS.record(false, record.kind());
        if let Some(l) = record.entry_landmark() {
            shared.newest_landmark.fetch_max(l, Ordering::SeqCst);
        }
        shared.received.store(seq, Ordering::SeqCst);
        if !matches!(record, Record::Heartbeat { .. }) {
            batch.push((seq, record));
        }
        // Everything that arrived together is queued at once, then acknowledged with one ack
        // (when the next read would wait for the network). The ack is for receipt, not
        // application: the output rule needs only that the backup holds the log up to an
        // output's position.
        if !reader.has_buffered_frame() {
            queue_batch(shared, inbox, &mut batch);
            if !shared.reply(&Record::Ack { seq }) {
                return;
            }
        }
    }
}

/// Hands received records to the vCPU thread (waking it if it may be waiting).
fn queue_batch(shared: &BackupShared, inbox: &Inbox, batch: &mut Vec<(u64, Record)>) {
    if batch.is_empty() {
        return;
    }
    let was_empty = {
        let mut q = lock(&shared.queue);
        let was_empty = q.is_empty();
        q.extend(batch.drain(..));
        was_empty
    };
    shared.arrived.notify_all();
    if was_empty {
        inbox.post(DeviceEvent::FtWake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// A primary's pending link and the backup's end of its connection.
    fn pair() -> (PendingLink, RecordWriter<TcpStream>, Arc<AtomicBool>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let primary = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (backup, _) = listener.accept().expect("accept");
        let released = Arc::new(AtomicBool::new(false));
        let r = released.clone();
        let release: ReleaseFn = Arc::new(move |_, _| r.store(true, Ordering::SeqCst));
        let events = crate::event_loop::running();
        let link = PendingLink::open(
            LinkStream::Tcp(primary),
            release,
            Duration::from_secs(10),
            Arc::new(Inbox::new()),
            &events,
        )
        .expect("open");
        (link, RecordWriter::new(backup), released)
    }

    fn alive_after(link: &PendingLink, wait: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < wait && link.is_alive() {
            std::thread::sleep(Duration::from_millis(5));
        }
        link.is_alive()
    }

    #[test]
    fn an_ack_beyond_what_was_sent_ends_the_link_and_releases_nothing() {
        let (link, mut backup, released) = pair();
        let shared = link.shared();
        shared.sent.store(5, Ordering::SeqCst);
        lock(&shared.held).push_back(HeldOutput {
            seq: 6,
            device: 0,
            id: 1,
            since: Instant::now(),
        });
        backup.write(&Record::Ack { seq: u64::MAX }).expect("write");
        backup.flush().expect("flush");
        assert!(
            !alive_after(&link, Duration::from_secs(5)),
            "the link must end"
        );
        assert!(!released.load(Ordering::SeqCst), "no output may leave");
        assert_eq!(shared.acked.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn an_ack_of_what_was_sent_releases_the_outputs_it_covers() {
        let (link, mut backup, released) = pair();
        let shared = link.shared();
        shared.sent.store(6, Ordering::SeqCst);
        lock(&shared.held).push_back(HeldOutput {
            seq: 6,
            device: 0,
            id: 1,
            since: Instant::now(),
        });
        backup.write(&Record::Ack { seq: 6 }).expect("write");
        backup.flush().expect("flush");
        let start = Instant::now();
        while !released.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(released.load(Ordering::SeqCst));
        assert!(alive_after(&link, Duration::from_millis(100)));
        link.close();
    }
}
