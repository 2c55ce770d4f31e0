//! Client workloads that run while VMs fail: each on its own thread with one TCP connection
//! that is never reopened, so a reset or a lost reply shows up as an error.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::exec_prefix;
use crate::resp::{Client, Reply};
use crate::stack::Lab;
use crate::topology::GUEST_IP;

/// One acknowledged request.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When it was sent, seconds since the workload's start.
    pub at_s: f64,
    pub latency_ms: f64,
    /// The counter value (INCR) or the write's number (SET).
    pub value: i64,
}

/// What a recorder saw: every acknowledged request, and the first error (after which it
/// stopped).
#[derive(Debug, Default)]
pub struct RecordLog {
    pub samples: Vec<Sample>,
    pub error: Option<String>,
}

impl RecordLog {
    /// The longest time between two consecutive replies (the client-visible pause), ms.
    pub fn max_gap_ms(&self) -> f64 {
        self.max_gap_between(f64::NEG_INFINITY, f64::INFINITY)
    }

    /// The longest time between two consecutive replies that both came in `[from, to]` s, ms.
    pub fn max_gap_between(&self, from: f64, to: f64) -> f64 {
        let done: Vec<f64> = self
            .completions()
            .filter(|&d| d >= from && d <= to)
            .collect();
        done.windows(2)
            .map(|w| (w[1] - w[0]) * 1e3)
            .fold(0.0, f64::max)
    }

    /// When each reply arrived, seconds since the start.
    fn completions(&self) -> impl Iterator<Item = f64> + '_ {
        self.samples.iter().map(|s| s.at_s + s.latency_ms / 1e3)
    }

    /// The client-visible outage caused by an event at `t` seconds: the longest pause between
    /// two consecutive replies that ends after `t` and starts before `t + 100 ms`. Returns
    /// (time from `t` to the reply that ended the pause, the pause), in ms; None if no reply
    /// came after `t`.
    pub fn outage_after(&self, t: f64) -> Option<(f64, f64)> {
        let done: Vec<f64> = self.completions().collect();
        done.windows(2)
            .filter(|w| w[1] > t && w[0] < t + 0.1)
            .map(|w| ((w[1] - t) * 1e3, (w[1] - w[0]) * 1e3))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Checks that the values are 1, 2, 3, ... with no gap and no repeat.
    pub fn check_sequence(&self) -> Result<(), String> {
        for (i, s) in self.samples.iter().enumerate() {
            let want = i64::try_from(i).unwrap_or(i64::MAX) + 1;
            if s.value != want {
                return Err(format!(
                    "reply {} at {:.3} s is {} (expected {want}); previous {:?}",
                    i + 1,
                    s.at_s,
                    s.value,
                    i.checked_sub(1).map(|j| self.samples[j].value)
                ));
            }
        }
        Ok(())
    }

    /// For tests: no client error, an unbroken sequence, and more than a few replies.
    pub fn assert_clean(&self, name: &str) {
        assert!(self.error.is_none(), "{name}: {:?}", self.error);
        self.check_sequence()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            self.samples.len() > 10,
            "{name}: only {} replies",
            self.samples.len()
        );
    }
}

/// A client thread sending one command at a time until stopped.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<RecordLog>>,
}

impl Recorder {
    /// INCR on `key` (which must not exist yet): replies must be 1, 2, 3, ...
    pub fn incr(lab: &Lab, key: &str, t0: Instant) -> Result<Self, crate::stack::StackError> {
        let key = key.as_bytes().to_vec();
        Self::start(lab, t0, move |c, _| match c.cmd(&[b"INCR", &key]) {
            Ok(Reply::Int(v)) => Ok(v),
            other => Err(format!("INCR: {other:?}")),
        })
    }

    /// `SET {prefix}{n} n` for n = 1, 2, ...: the samples are the acknowledged writes.
    pub fn writes(lab: &Lab, prefix: &str, t0: Instant) -> Result<Self, crate::stack::StackError> {
        let prefix = prefix.to_string();
        Self::start(lab, t0, move |c, n| {
            let (key, value) = (format!("{prefix}{n}"), n.to_string());
            match c.cmd(&[b"SET", key.as_bytes(), value.as_bytes()]) {
                Ok(Reply::Status(s)) if s == "OK" => Ok(n),
                other => Err(format!("SET {key}: {other:?}")),
            }
        })
    }

    fn start(
        lab: &Lab,
        t0: Instant,
        mut step: impl FnMut(&mut Client, i64) -> Result<i64, String> + Send + 'static,
    ) -> Result<Self, crate::stack::StackError> {
        let mut client = lab.connect()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut log = RecordLog::default();
            let mut n = 1;
            while !flag.load(Ordering::SeqCst) {
                let sent = Instant::now();
                match step(&mut client, n) {
                    Ok(value) => log.samples.push(Sample {
                        at_s: (sent - t0).as_secs_f64(),
                        latency_ms: sent.elapsed().as_secs_f64() * 1e3,
                        value,
                    }),
                    Err(e) => {
                        log.error = Some(format!("after {} replies: {e}", log.samples.len()));
                        break;
                    }
                }
                n += 1;
            }
            log
        });
        Ok(Recorder {
            stop,
            handle: Some(handle),
        })
    }

    /// Replies so far are not visible until `finish`; this only says whether it still runs.
    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    pub fn finish(mut self) -> RecordLog {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(log)) => log,
            _ => RecordLog {
                error: Some("recorder thread panicked".into()),
                ..RecordLog::default()
            },
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Checks that every acknowledged write of a `Recorder::writes` is in the store.
pub fn verify_writes(lab: &Lab, prefix: &str, log: &RecordLog) -> Result<usize, String> {
    let mut c = lab.connect().map_err(|e| e.to_string())?;
    for s in &log.samples {
        let key = format!("{prefix}{}", s.value);
        match c.cmd(&[b"GET", key.as_bytes()]) {
            Ok(Reply::Bulk(Some(v))) if v == s.value.to_string().as_bytes() => {}
            other => return Err(format!("acknowledged write {key} lost: GET gave {other:?}")),
        }
    }
    Ok(log.samples.len())
}

/// redis-benchmark runs, one after the other, until stopped; any failure is remembered.
pub struct BenchLoop {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(u32, Option<String>)>>,
}

impl BenchLoop {
    /// `redis-benchmark -t set,get,incr -n REQUESTS -c CLIENTS` in the client namespace.
    pub fn start(lab: &Lab, requests: u32, clients: u32) -> Self {
        let mut argv = exec_prefix(&lab.topo.ns("client"));
        argv.extend(
            [
                "timeout",
                "120",
                "redis-benchmark",
                "-h",
                GUEST_IP,
                "-t",
                "set,get,incr",
                "-n",
                &requests.to_string(),
                "-c",
                &clients.to_string(),
                "-q",
            ]
            .map(String::from),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut runs = 0;
            while !flag.load(Ordering::SeqCst) {
                let out = Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(Stdio::null())
                    .output();
                let failure = match out {
                    Err(e) => Some(format!("cannot run redis-benchmark: {e}")),
                    Ok(o) => {
                        let text = String::from_utf8_lossy(&o.stdout).to_string()
                            + &String::from_utf8_lossy(&o.stderr);
                        (!o.status.success() || text.to_lowercase().contains("error"))
                            .then(|| format!("redis-benchmark ({}):\n{text}", o.status))
                    }
                };
                if failure.is_some() {
                    return (runs, failure);
                }
                runs += 1;
            }
            (runs, None)
        });
        BenchLoop {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops after the current run; returns the completed runs, or the failure.
    pub fn finish(mut self) -> Result<u32, String> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok((runs, None))) => Ok(runs),
            Some(Ok((_, Some(e)))) => Err(e),
            _ => Err("benchmark thread panicked".into()),
        }
    }
}

impl Drop for BenchLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Sleeps in small steps, returning early if `until` holds.
pub fn wait_until(timeout: Duration, mut until: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if until() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    until()
}
