//! Shared helpers for tests that boot a guest: they need /dev/kvm, root and build/guest.elf,
//! and fail loudly (never skip) when one is missing.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the test guest built by `make guest`.
pub fn guest_elf() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/guest.elf");
    assert!(
        path.exists(),
        "{} is missing: run `make guest` first (make test does)",
        path.display()
    );
    path
}

/// Panics unless KVM is usable: these tests must fail, not skip, on a machine without it.
pub fn require_kvm() {
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    assert!(
        kvm.is_ok(),
        "this test boots a guest and needs read/write access to /dev/kvm: {:?}",
        kvm.err()
    );
}

/// The result of one VMM run.
pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn assert_success(&self) {
        assert_eq!(
            self.status,
            Some(0),
            "vmm failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs the VMM binary with `args`, killing it after `timeout`.
pub fn run_vmm(args: &[&str], timeout: Duration) -> Run {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm");
    loop {
        match child.try_wait().expect("wait for vmm") {
            Some(_) => break,
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect vmm output");
                panic!(
                    "vmm did not stop within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let elapsed = start.elapsed();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("collect vmm output");
    Run {
        status: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed,
    }
}

/// Boots the test guest with `cmdline` (plus `--stats`).
pub fn boot_guest(cmdline: &str, timeout: Duration) -> Run {
    require_kvm();
    let elf = guest_elf();
    let elf = elf.to_str().expect("utf-8 path");
    run_vmm(&["--kernel", elf, "--cmdline", cmdline, "--stats"], timeout)
}

/// Reads `key=<number>` from a `vmm: stats:` line.
pub fn stat(run: &Run, key: &str) -> u64 {
    let pattern = format!("{key}=");
    run.stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&pattern))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in stats:\n{}", run.stderr))
}

/// A VMM process, killed when the test ends (also when it fails).
pub struct Vmm(pub Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A client of the VMM's control socket.
pub struct Api(BufReader<UnixStream>);

impl Api {
    pub fn connect(path: &std::path::Path) -> Api {
        let start = Instant::now();
        loop {
            match UnixStream::connect(path) {
                Ok(s) => return Api(BufReader::new(s)),
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("cannot connect to the API socket: {e}"),
            }
        }
    }

    pub fn call(&mut self, request: Value) -> Value {
        let stream = self.0.get_mut();
        stream
            .write_all(format!("{request}\n").as_bytes())
            .expect("send");
        let mut line = String::new();
        self.0.read_line(&mut line).expect("reply");
        serde_json::from_str(&line).expect("reply is JSON")
    }
}

/// Starts the VMM on the test guest with `cmdline` and its control socket at `sock`.
pub fn spawn_with_api(cmdline: &str, sock: &std::path::Path) -> Vmm {
    Vmm(Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["--kernel", guest_elf().to_str().expect("path")])
        .args(["--cmdline", cmdline])
        .args(["--api-sock", sock.to_str().expect("path")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn vmm"))
}
