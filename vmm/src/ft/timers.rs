//! The FT channel's timing, as periodic work on the event loop (event_loop::every) rather than
//! threads that sleep: the watchdog of each logging channel, the backup's heartbeats, and the
//! heartbeats that keep a joining backup's watchdog fed while the primary's vCPU has not yet
//! taken the finished pre-copy. None of them blocks the loop: they write a small record only
//! to a socket with room for it, and skip the beat otherwise.

use std::net::Shutdown;

use super::link::LinkStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::channel::{unix_ms, BackupShared, HEARTBEAT};
use super::precopy::JoinState;
use super::record::Record;
use crate::event_loop::{every, writable_now, EventLoopError, Registrar, Tick};
use crate::inbox::{DeviceEvent, Inbox};
use crate::metrics::METRICS;
use crate::sync::lock;

/// Watches a logging channel: once nothing (record, ack or heartbeat) has arrived for
/// `timeout`, shuts the connection down, which ends the channel's reader and writer threads
/// (they mark it dead). Ends by itself once `alive()` turns false for another reason.
pub fn watch(
    events: &Registrar,
    name: &'static str,
    stream: LinkStream,
    timeout: Duration,
    last_heard: impl Fn() -> Instant + Send + 'static,
    alive: impl Fn() -> bool + Send + 'static,
) -> Result<(), EventLoopError> {
    let tick = (timeout / 10).clamp(Duration::from_millis(1), Duration::from_millis(20));
    let watchdog = Watchdog {
        name,
        stream,
        timeout,
        last_heard: Box::new(last_heard),
        alive: Box::new(alive),
        overdue: 0,
    };
    every(events, tick, watchdog)
}

struct Watchdog {
    name: &'static str,
    stream: LinkStream,
    timeout: Duration,
    last_heard: Box<dyn Fn() -> Instant + Send>,
    alive: Box<dyn Fn() -> bool + Send>,
    /// Heartbeat periods already counted as missed in the current silence.
    overdue: u64,
}

impl Tick for Watchdog {
    fn tick(&mut self) -> bool {
        if !(self.alive)() {
            return false;
        }
        let silent = (self.last_heard)().elapsed();
        // Each heartbeat period beyond the first without a word is a missed heartbeat
        // (counted once, however many ticks see the same silence).
        let periods = silent.as_millis() / HEARTBEAT.as_millis();
        let overdue = u64::try_from(periods.saturating_sub(1)).unwrap_or(u64::MAX);
        if overdue > self.overdue {
            METRICS.ft_heartbeats_missed.inc_by(overdue - self.overdue);
        }
        self.overdue = overdue;
        if silent <= self.timeout {
            return true;
        }
        METRICS.ft_peers_lost.with_label_values(&[self.name]).inc();
        log::error!(
            "ft: nothing from the {} for {} ms (timeout {} ms): declaring it lost",
            self.name,
            silent.as_millis(),
            self.timeout.as_millis()
        );
        let _ = self.stream.shutdown(Shutdown::Both);
        false
    }
}

/// The backup's heartbeat to the primary (with the landmark it has applied), every
/// `HEARTBEAT`, until the channel dies.
pub fn backup_heartbeat(
    events: &Registrar,
    shared: Arc<BackupShared>,
) -> Result<(), EventLoopError> {
    every(events, HEARTBEAT, BackupHeartbeat(shared))
}

struct BackupHeartbeat(Arc<BackupShared>);

impl Tick for BackupHeartbeat {
    fn tick(&mut self) -> bool {
        let shared = &self.0;
        if !shared.alive.load(Ordering::SeqCst) {
            return false;
        }
        let hb = Record::Heartbeat {
            landmark: shared.applied_landmark.load(Ordering::SeqCst),
            unix_ms: unix_ms(),
        };
        shared.try_reply(&hb)
    }
}

/// Until the vCPU takes the finished pre-copy (`JoinState::Ready`) for its stop-and-copy,
/// keeps the joining backup's watchdog fed. A failed heartbeat fails the join (the vCPU is
/// told through `inbox`).
pub fn transfer_keepalive(
    events: &Registrar,
    state: Arc<Mutex<JoinState>>,
    inbox: Arc<Inbox>,
) -> Result<(), EventLoopError> {
    every(events, HEARTBEAT / 5, TransferKeepalive { state, inbox })
}

struct TransferKeepalive {
    state: Arc<Mutex<JoinState>>,
    inbox: Arc<Inbox>,
}

impl Tick for TransferKeepalive {
    fn tick(&mut self) -> bool {
        let mut state = lock(&self.state);
        let JoinState::Ready(h) = &mut *state else {
            return false; // taken by the vCPU, or failed
        };
        if !writable_now(h.writer.as_raw_fd()) {
            return true; // the backup is not reading: its own watchdog will tell
        }
        match h.writer.heartbeat_if_due() {
            Ok(()) => true,
            Err(e) => {
                *state = JoinState::Failed(e);
                drop(state);
                self.inbox.post(DeviceEvent::FtJoinReady);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    /// A connected pair on loopback.
    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, server)
    }

    #[test]
    fn the_watchdog_shuts_a_silent_connection_down() {
        use std::io::Read;
        let events = crate::event_loop::running();
        let (client, _server) = tcp_pair();
        let start = Instant::now();
        let watched = LinkStream::Tcp(client.try_clone().expect("clone"));
        watch(
            &events,
            "test peer",
            watched,
            Duration::from_millis(100),
            move || start,
            || true,
        )
        .expect("watch");
        let mut reader = client;
        reader
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 1];
        // The peer never writes: only the watchdog's shutdown can end this read (with EOF).
        let n = reader
            .read(&mut buf)
            .expect("read ends with EOF, not a timeout");
        assert_eq!(n, 0);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(4), "{waited:?}");
    }

    #[test]
    fn the_watchdog_leaves_a_connection_that_is_heard_from() {
        use std::io::Read;
        let events = crate::event_loop::running();
        let (client, _server) = tcp_pair();
        let watched = LinkStream::Tcp(client.try_clone().expect("clone"));
        // Always just heard from.
        watch(
            &events,
            "test peer",
            watched,
            Duration::from_millis(50),
            Instant::now,
            || true,
        )
        .expect("watch");
        let mut reader = client;
        reader
            .set_read_timeout(Some(Duration::from_millis(400)))
            .expect("timeout");
        let mut buf = [0u8; 1];
        let err = reader
            .read(&mut buf)
            .expect_err("no EOF: the watchdog must not shut it down");
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{err}"
        );
    }
}
