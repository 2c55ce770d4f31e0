//! Failure detection and the split-brain guard (docs/ARCHITECTURE.md, "Failover").
//!
//! Each side of an FT pair watches the logging channel: when nothing (record, ack or
//! heartbeat) has arrived for the configured timeout, the watchdog (ft::timers) shuts the
//! connection down and the channel's threads mark it dead. A dead channel cannot tell "the peer crashed" from
//! "the network between us failed", so before going on alone each side asks the arbiter to
//! test-and-set the flag of (vm id, epoch): exactly one side wins. The epoch names one
//! primary/backup pairing (chosen by the primary when the backup joins, sent in the
//! state transfer's `Hello`), so a survivor that is later re-protected competes for a new flag.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arbiter::etcd::EtcdCluster;

use super::{arbiter_ask, etcd_ask};
use crate::config::FailoverConfig;
use crate::event_loop::Registrar;
use crate::inbox::Inbox;
use crate::sync::lock;

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
        .map_or(0, crate::stats::millis);
    now.max(previous + 1)
}

/// An arbitration under way on the event loop (ft::arbiter_ask), so that the vCPU keeps
/// going meanwhile (its outputs stay held). The vCPU is woken through its inbox when the
/// answer arrives.
pub struct Arbitration {
    verdict: Arc<Mutex<Option<Verdict>>>,
    pub started: Instant,
}

impl Arbitration {
    pub fn start(cfg: &FailoverConfig, epoch: u64, inbox: Arc<Inbox>, events: &Registrar) -> Self {
        let verdict = Arc::new(Mutex::new(None));
        let lost = |owner: &str| {
            Some(Verdict::Lost {
                owner: owner.into(),
                epoch,
            })
        };
        match cfg.arbiter.clone() {
            // Config validation requires an arbiter in FT mode; without one nobody may go live.
            None => {
                log::error!("ft: no arbiter configured; this side halts");
                *lock(&verdict) = lost("(no arbiter configured)");
            }
            Some(url) if url.starts_with("etcd://") => {
                let asked = EtcdCluster::parse(&url, etcd_ask::ATTEMPT_TIMEOUT)
                    .map_err(|e| e.to_string())
                    .and_then(|cluster| {
                        let (vm, node) = (cfg.vm_id.clone(), cfg.node.clone());
                        etcd_ask::start(cluster, vm, node, epoch, verdict.clone(), inbox)
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = asked {
                    log::error!("ft: cannot ask the etcd arbiter: {e}");
                    *lock(&verdict) = lost("(cannot ask the arbiter)");
                }
            }
            Some(addr) => {
                let asked = arbiter_ask::start(events, addr, cfg, epoch, verdict.clone(), inbox);
                if let Err(e) = asked {
                    // Nobody asks: this side must not go on alone.
                    log::error!("ft: cannot ask the arbiter: {e}");
                    *lock(&verdict) = lost("(cannot ask the arbiter)");
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::DeviceEvent;
    use std::time::Duration;

    #[test]
    fn epochs_only_grow() {
        let a = next_epoch(0);
        assert!(a > 1_600_000_000_000, "milliseconds since 1970: {a}");
        assert_eq!(next_epoch(u64::MAX - 1), u64::MAX);
        let far = a + 1_000_000;
        assert_eq!(next_epoch(far), far + 1);
    }

    /// A scripted arbiter: answers the n-th connection's request line with `replies[n]`
    /// (a connection beyond the script is closed at once). Returns its address and the
    /// request lines it got.
    fn fake_arbiter(replies: Vec<&'static str>) -> (String, Arc<Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let got = Arc::new(Mutex::new(Vec::new()));
        let log = got.clone();
        std::thread::spawn(move || {
            for reply in replies {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let _ = reader.read_line(&mut line);
                lock(&log).push(line.trim_end().to_string());
                let _ = (&stream).write_all(reply.as_bytes());
            }
        });
        (addr, got)
    }

    fn ask(addr: Option<String>, epoch: u64) -> Option<Verdict> {
        let events = crate::event_loop::running();
        let cfg = FailoverConfig {
            arbiter: addr,
            vm_id: "vm1".into(),
            node: "node-a".into(),
            ..FailoverConfig::default()
        };
        let inbox = Arc::new(Inbox::new());
        let a = Arbitration::start(&cfg, epoch, inbox.clone(), &events);
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.verdict().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let v = a.verdict();
        if v.is_some() && cfg.arbiter.is_some() {
            assert!(
                inbox
                    .drain()
                    .iter()
                    .any(|e| matches!(e, DeviceEvent::FtWake)),
                "the vCPU is woken"
            );
        }
        v
    }

    #[test]
    fn without_an_arbiter_nobody_wins() {
        assert!(matches!(ask(None, 5), Some(Verdict::Lost { .. })));
    }

    #[test]
    fn a_granted_flag_wins_and_the_request_names_vm_epoch_and_owner() {
        let (addr, got) = fake_arbiter(vec![
            "{\"ok\":true,\"granted\":true,\"owner\":\"node-a\",\"epoch\":7}\n",
        ]);
        assert_eq!(ask(Some(addr), 7), Some(Verdict::Won));
        let req: serde_json::Value = serde_json::from_str(&lock(&got)[0]).expect("json request");
        assert_eq!(req["op"], "test_and_set");
        assert_eq!(req["vm"], "vm1");
        assert_eq!(req["epoch"], 7);
        assert_eq!(req["owner"], "node-a");
    }

    #[test]
    fn error_replies_garbage_and_hang_ups_are_retried_until_a_decision() {
        let (addr, got) = fake_arbiter(vec![
            "{\"ok\":false,\"error\":\"epoch ahead of the arbiter's clock\"}\n",
            "not json\n",
            "",
            "{\"ok\":true,\"granted\":false,\"owner\":\"node-b\",\"epoch\":9}\n",
        ]);
        assert_eq!(
            ask(Some(addr), 9),
            Some(Verdict::Lost {
                owner: "node-b".into(),
                epoch: 9
            })
        );
        assert_eq!(lock(&got).len(), 4, "one request per attempt");
    }

    #[test]
    fn an_arbiter_that_never_answers_decides_nothing() {
        // Accepts (the kernel's backlog) but never reads nor replies.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let events = crate::event_loop::running();
        let cfg = FailoverConfig {
            arbiter: Some(addr),
            ..FailoverConfig::default()
        };
        let a = Arbitration::start(&cfg, 3, Arc::new(Inbox::new()), &events);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(a.verdict(), None, "no answer, no verdict: nobody goes live");
        drop(listener);
    }
}
