//! Processes started by the tests: output goes to files, and `Drop` kills them by PID.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("{name} did not print `{pattern}` within {timeout:?}; its output:\n{output}")]
    Timeout {
        name: String,
        pattern: String,
        timeout: Duration,
        output: String,
    },
    #[error("{name} exited ({status}) before printing `{pattern}`; its output:\n{output}")]
    Exited {
        name: String,
        pattern: String,
        status: String,
        output: String,
    },
}

/// A child process whose stdout and stderr go to `<dir>/<name>.log` (appended: a process
/// started again under the same name continues the file; `output` shows only its own part).
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
    /// Where this process's output starts in the log.
    start: usize,
}

impl Proc {
    /// Starts `argv` (the first element is the program), optionally inside namespace `ns`.
    pub fn spawn(
        name: &str,
        dir: &Path,
        ns: Option<&str>,
        argv: &[String],
    ) -> Result<Self, ProcError> {
        let log = dir.join(format!("{name}.log"));
        let err = |source| ProcError::Spawn {
            name: name.to_string(),
            source,
        };
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(err)?;
        let errf = out.try_clone().map_err(err)?;
        let start = usize::try_from(out.metadata().map_err(err)?.len()).unwrap_or(usize::MAX);
        let mut full: Vec<String> = ns.map(crate::netns::exec_prefix).unwrap_or_default();
        full.extend_from_slice(argv);
        let child = Command::new(&full[0])
            .args(&full[1..])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(errf)
            .spawn()
            .map_err(err)?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log,
            start,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// CPU time (user + system, all threads) the process has used so far, in seconds.
    /// (`ip netns exec` execs the program, so the child's PID is the program's.)
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Some(ticks / hz)
    }

    /// What this process has written so far.
    pub fn output(&self) -> String {
        let all = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(all.get(self.start..).unwrap_or_default()).into_owned()
    }

    /// Exit status if the process has exited.
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits until the log contains `pattern` (counting only text after `from` bytes).
    pub fn wait_for(
        &mut self,
        pattern: &str,
        from: usize,
        timeout: Duration,
    ) -> Result<(), ProcError> {
        let start = Instant::now();
        loop {
            let out = self.output();
            if out
                .get(from..)
                .is_some_and(|s| s.contains(pattern) || without_log_lines(s).contains(pattern))
            {
                return Ok(());
            }
            if let Some(status) = self.try_status() {
                return Err(ProcError::Exited {
                    name: self.name.clone(),
                    pattern: pattern.into(),
                    status: status.to_string(),
                    output: out,
                });
            }
            if start.elapsed() > timeout {
                return Err(ProcError::Timeout {
                    name: self.name.clone(),
                    pattern: pattern.into(),
                    timeout,
                    output: out,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL by PID and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// `out` without the log lines (env_logger's `[<RFC 3339 time> LEVEL target] ...`) that a
/// process's stderr wrote into the middle of a console line on its stdout: the guest's
/// console is written a byte at a time, a log line whole, so `guest: kv ready` can arrive as
/// `g[... backup joined ...]\nuest: kv ready`.
pub fn without_log_lines(out: &str) -> String {
    let mut kept = String::with_capacity(out.len());
    let mut rest = out;
    while let Some(i) = rest.find('[') {
        let after = &rest[i + 1..];
        let is_log = after.len() > 5
            && after.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && after.as_bytes()[4] == b'-';
        kept.push_str(&rest[..i]);
        if is_log {
            rest = after.find('\n').map_or("", |n| &after[n + 1..]);
        } else {
            kept.push('[');
            rest = after;
        }
    }
    kept.push_str(rest);
    kept
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what each of its processes said (PROC_DUMP=1: every test, which
        // also shows the processes of a setup that returned an error before any panic).
        if std::thread::panicking() || std::env::var_os("PROC_DUMP").is_some() {
            let out = self.output();
            let tail: Vec<&str> = out.lines().rev().take(40).collect();
            eprintln!("---- last lines of {} ----", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::without_log_lines;

    #[test]
    fn log_lines_inside_console_lines_are_taken_out() {
        let out = "boot\ng[2026-12-04T07:00:00Z WARN  vmm::ft::join] ft: backup joined at landmark 5\nuest: kv ready\n[x] stays\n";
        assert_eq!(without_log_lines(out), "boot\nguest: kv ready\n[x] stays\n");
        assert!(!out.contains("guest: kv ready"));
    }
}
