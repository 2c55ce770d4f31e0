//! Integration tests against the real binary, on loopback with ephemeral ports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use arbiter::client::Client;

const BIN: &str = env!("CARGO_BIN_EXE_arbiter");
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));

/// A running `arbiter serve`; killed (SIGKILL, by PID) and reaped on drop.
struct Arbiter {
    child: Child,
    addr: String,
}

impl Arbiter {
    fn start(state: &Path) -> Arbiter {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--state"])
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn arbiter");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let addr = match line.trim().strip_prefix("listening on ") {
            Some(a) => a.to_string(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("arbiter did not start: {line:?}");
            }
        };
        Arbiter { child, addr }
    }

    fn client(&self) -> Client {
        Client::connect(&self.addr, TIMEOUT).expect("connect")
    }

    /// kill -9, as a crash.
    fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Arbiter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_cli(state: &Path) -> String {
    let out = Command::new(BIN)
        .args(["status", "--state"])
        .arg(state)
        .output()
        .expect("run status");
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

#[test]
fn grant_survives_kill9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arbiter::start(dir.path());
    let d = a.client().test_and_set("ft-vm", 1, "host-a").unwrap();
    assert!(d.granted && d.owner == "host-a" && d.epoch == 1, "{d:?}");
    a.kill9();

    let a = Arbiter::start(dir.path());
    let mut c = a.client();
    let d = c.test_and_set("ft-vm", 1, "host-b").unwrap();
    assert!(!d.granted && d.owner == "host-a" && d.epoch == 1, "{d:?}");
    let d = c.test_and_set("ft-vm", 1, "host-a").unwrap();
    assert!(d.granted, "same owner after restart: {d:?}");
    let d = c.test_and_set("ft-vm", 2, "host-b").unwrap();
    assert!(d.granted && d.owner == "host-b", "{d:?}");
    a.kill9();

    let a = Arbiter::start(dir.path());
    let d = a.client().test_and_set("ft-vm", 1, "host-a").unwrap();
    assert!(
        !d.granted && d.stale && d.epoch == 2 && d.owner == "host-b",
        "{d:?}"
    );
}

#[test]
fn concurrent_clients_one_winner_per_round() {
    const ROUNDS: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let a = Arbiter::start(dir.path());
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = ["host-a", "host-b"]
        .into_iter()
        .map(|owner| {
            let mut c = a.client();
            let barrier = Arc::clone(&barrier);
            // No asserts in here: a panic would leave the other thread stuck at the barrier.
            thread::spawn(move || {
                (1..=ROUNDS)
                    .map(|epoch| {
                        barrier.wait();
                        c.test_and_set("race-vm", epoch, owner)
                            .map(|d| (owner, epoch, d))
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<(bool, String)>> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .expect("client thread")
                .into_iter()
                .map(|r| {
                    let (owner, epoch, d) = r.expect("test_and_set");
                    assert_eq!(d.epoch, epoch, "{owner}: {d:?}");
                    assert!(!d.stale, "{d:?}");
                    assert_eq!(d.granted, d.owner == owner, "{owner}: {d:?}");
                    (d.granted, d.owner)
                })
                .collect()
        })
        .collect();
    let mut wins = [0, 0];
    assert_eq!(
        (results[0].len(), results[1].len()),
        (ROUNDS as usize, ROUNDS as usize)
    );
    for (round, (a_res, b_res)) in (1..).zip(results[0].iter().zip(&results[1])) {
        assert!(
            a_res.0 ^ b_res.0,
            "round {round}: exactly one winner: {a_res:?} {b_res:?}"
        );
        assert_eq!(a_res.1, b_res.1, "both see the same owner in round {round}");
        wins[usize::from(b_res.0)] += 1;
    }
    assert_eq!(wins[0] + wins[1], ROUNDS);
    eprintln!("wins: host-a {} host-b {}", wins[0], wins[1]);

    let last = results[0][ROUNDS as usize - 1].1.clone();
    let flags = a.client().status().unwrap();
    assert_eq!(flags.len(), 1);
    assert_eq!((flags[0].epoch, &flags[0].owner), (ROUNDS, &last));
}

#[test]
fn garbage_then_valid_request_on_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arbiter::start(dir.path());
    let mut c = a.client();
    for bad in [
        "this is not json",
        r#"{"op":"launch_missiles"}"#,
        r#"{"op":"test_and_set","vm":"ft-vm","epoch":1}"#,
        &format!(
            r#"{{"op":"test_and_set","vm":"{}","epoch":1,"owner":"a"}}"#,
            "v".repeat(65)
        ),
        r#"{"op":"test_and_set","vm":"ft/vm","epoch":1,"owner":"a"}"#,
        &format!(
            r#"{{"op":"test_and_set","vm":"v","epoch":1,"owner":"{}"}}"#,
            "o".repeat(65)
        ),
    ] {
        let v = c.call_raw(bad).unwrap();
        assert_eq!(v["ok"], false, "{bad}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let v = c
        .call_raw(r#"{"op":"test_and_set","vm":"ft-vm","epoch":1,"owner":"host-a"}"#)
        .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"ok":true,"granted":true,"owner":"host-a","epoch":1})
    );
    let v = c
        .call_raw(r#"{"op":"test_and_set","vm":"ft-vm","epoch":1,"owner":"host-b"}"#)
        .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"ok":true,"granted":false,"owner":"host-a","epoch":1})
    );
    // Nothing invalid was stored.
    assert_eq!(c.status().unwrap().len(), 1);
}

#[test]
fn overlong_line_gets_error_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arbiter::start(dir.path());
    let mut s = TcpStream::connect(&a.addr).unwrap();
    s.set_read_timeout(TIMEOUT).unwrap();
    // 4096 bytes + newline is still accepted (and rejected only as bad JSON).
    s.write_all(format!("{}\n", "x".repeat(4096)).as_bytes())
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("bad JSON"), "{line}");
    s.write_all(format!("{}\n", "x".repeat(5000)).as_bytes())
        .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(
        line.contains("\"ok\":false") && line.contains("longer than 4096"),
        "{line}"
    );
    let mut rest = Vec::new();
    // Closed: EOF (or a reset, as unread bytes were left behind).
    match r.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    // The server itself is fine.
    assert!(a.client().test_and_set("vm", 1, "host-a").unwrap().granted);
}

#[test]
fn status_command_prints_granted_owner() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        status_cli(dir.path()).lines().count(),
        1,
        "header only when empty"
    );
    let a = Arbiter::start(dir.path());
    let mut c = a.client();
    assert!(c.test_and_set("ft-vm", 7, "host-b").unwrap().granted);
    assert!(!c.test_and_set("ft-vm", 7, "host-a").unwrap().granted);
    assert!(c.test_and_set("other-vm", 1, "host-a").unwrap().granted);
    let out = status_cli(dir.path());
    let lines: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(&lines[0][..3], ["ft-vm", "7", "host-b"], "{out}");
    assert_eq!(&lines[1][..3], ["other-vm", "1", "host-a"], "{out}");
    assert!(lines[0][3].ends_with('Z'), "{out}");
}

#[test]
fn corrupt_state_and_second_instance_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arbiter::start(dir.path());
    assert!(a.client().test_and_set("vm", 1, "host-a").unwrap().granted);

    // A second arbiter on the same directory would grant the same flag again.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{out:?}"
    );
    a.kill9();

    let state = dir.path().join("arbiter-state.json");
    std::fs::write(&state, "{\"version\":1,\"flags\":[{\"vm\":").unwrap();
    for args in [
        &["serve", "--listen", "127.0.0.1:0", "--state"][..],
        &["status", "--state"][..],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("corrupt state file"),
            "{out:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{\"version\":1,\"flags\":[{\"vm\":"
    );
}
