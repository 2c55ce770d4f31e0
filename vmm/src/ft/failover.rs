//! Failure detection and the split-brain guard (docs/ARCHITECTURE.md, "Failover").
//!
//! Each side of an FT pair watches the logging channel: when nothing (record, ack or
//! heartbeat) has arrived for the configured timeout, the watchdog shuts the connection down
//! and the channel's threads mark it dead. A dead channel cannot tell "the peer crashed" from
//! "the network between us failed", so before going on alone each side asks the arbiter to
//! test-and-set the flag of (vm id, epoch): exactly one side wins. The epoch names one
//! primary/backup pairing (chosen by the primary when the backup joins, sent in the
//! state transfer's `Hello`), so a survivor that is later re-protected competes for a new flag.

use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arbiter::client::{Client, ClientError};

use crate::config::FailoverConfig;
use crate::inbox::{DeviceEvent, Inbox};
use crate::sync::lock;

/// How long one arbiter attempt may take, and the pause between attempts while it cannot be
/// reached (neither side goes live meanwhile).
const ARBITER_TIMEOUT: Duration = Duration::from_millis(500);
const ARBITER_RETRY: Duration = Duration::from_millis(200);

/// The arbiter's answer for this VMM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// This side owns the epoch: it goes on alone.
    Won,
    /// The flag belongs to `owner` (or a later `epoch` was already decided): halt.
    Lost { owner: String, epoch: u64 },
}

/// A fresh epoch for a new pairing: milliseconds since the Unix epoch, and always above
/// `previous` (epochs only grow, so a stale side can never win an old flag again).
pub fn next_epoch(previous: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now.max(previous + 1)
}

/// Asks the arbiter until it answers; blocks meanwhile.
pub fn arbitrate(cfg: &FailoverConfig, epoch: u64) -> Verdict {
    let Some(addr) = cfg.arbiter.as_deref() else {
        // Config validation requires an arbiter in FT mode; without one nobody may go live.
        log::error!("ft: no arbiter configured; this side halts");
        return Verdict::Lost {
            owner: "(no arbiter configured)".into(),
            epoch,
        };
    };
    let start = Instant::now();
    let mut attempts = 0u64;
    loop {
        let answer = Client::connect(addr, Some(ARBITER_TIMEOUT))
            .and_then(|mut c| c.test_and_set(&cfg.vm_id, epoch, &cfg.node));
        match answer {
            Ok(d) if d.granted => return Verdict::Won,
            Ok(d) => {
                return Verdict::Lost {
                    owner: d.owner,
                    epoch: d.epoch,
                }
            }
            Err(e) => {
                if attempts.is_multiple_of(10) {
                    // An error reply (e.g. an epoch ahead of the arbiter's clock, or its
                    // storage failing) grants nothing either: wait and ask again.
                    let what = match &e {
                        ClientError::Refused(_) => "answers with an error",
                        _ => "unreachable",
                    };
                    log::error!(
                        "ft: arbiter {addr} {what} for {} ms ({e}); not going on alone; retrying",
                        start.elapsed().as_millis()
                    );
                }
                attempts += 1;
                std::thread::sleep(ARBITER_RETRY);
            }
        }
    }
}

/// An arbitration running on its own thread, so that the vCPU keeps going meanwhile (its
/// outputs stay held). The vCPU is woken through its inbox when the answer arrives.
pub struct Arbitration {
    verdict: Arc<Mutex<Option<Verdict>>>,
    pub started: Instant,
}

impl Arbitration {
    pub fn start(cfg: FailoverConfig, epoch: u64, inbox: Arc<Inbox>) -> Self {
        let verdict = Arc::new(Mutex::new(None));
        let slot = verdict.clone();
        let spawned = std::thread::Builder::new()
            .name("ft-arbiter".into())
            .spawn(move || {
                let v = arbitrate(&cfg, epoch);
                *lock(&slot) = Some(v);
                inbox.post(DeviceEvent::FtWake);
            });
        if let Err(e) = spawned {
            // Without the thread nobody asks: this side must not go on alone.
            log::error!("ft: cannot start the arbiter thread: {e}");
            *lock(&verdict) = Some(Verdict::Lost {
                owner: "(arbiter thread failed)".into(),
                epoch,
            });
        }
        Arbitration {
            verdict,
            started: Instant::now(),
        }
    }

    /// The answer, once there is one.
    pub fn verdict(&self) -> Option<Verdict> {
        lock(&self.verdict).clone()
    }
}

/// Watches `last_heard`: once it is older than `timeout` the connection is shut down, which
/// ends the channel's reader and writer threads (they mark the channel dead). Ends by itself
/// once `alive()` turns false for another reason.
pub fn spawn_watchdog(
    name: &'static str,
    stream: TcpStream,
    timeout: Duration,
    last_heard: impl Fn() -> Instant + Send + 'static,
    alive: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<()> {
    let tick = (timeout / 10).clamp(Duration::from_millis(1), Duration::from_millis(20));
    std::thread::Builder::new()
        .name("ft-watchdog".into())
        .spawn(move || {
            while alive() {
                let silent = last_heard().elapsed();
                if silent > timeout {
                    log::error!(
                        "ft: nothing from the {name} for {} ms (timeout {} ms): declaring it lost",
                        silent.as_millis(),
                        timeout.as_millis()
                    );
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
                std::thread::sleep(tick);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_only_grow() {
        let a = next_epoch(0);
        assert!(a > 1_600_000_000_000, "milliseconds since 1970: {a}");
        assert_eq!(next_epoch(u64::MAX - 1), u64::MAX);
        let far = a + 1_000_000;
        assert_eq!(next_epoch(far), far + 1);
    }

    #[test]
    fn without_an_arbiter_nobody_wins() {
        let cfg = FailoverConfig::default();
        assert!(matches!(arbitrate(&cfg, 5), Verdict::Lost { .. }));
    }

    #[test]
    fn watchdog_shuts_a_silent_connection_down() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).expect("connect");
        let (_server, _) = listener.accept().expect("accept");
        let start = Instant::now();
        let watched = client.try_clone().expect("clone");
        spawn_watchdog(
            "test peer",
            watched,
            Duration::from_millis(100),
            move || start,
            || true,
        )
        .expect("spawn");
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
}
