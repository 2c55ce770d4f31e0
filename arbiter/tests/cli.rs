//! Integration tests against the real binary: grants, status, the state file's rules
//! (`--init`, `reset`) and the epoch bound. Hostile connections: tests/hostile.rs.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;

use arbiter::client::ClientError;
use arbiter::limits::EPOCH_SLACK_MS;
use common::{now_ms, run, state_dir, status_cli, stderr, Arbiter, TIMEOUT};

#[test]
fn grant_survives_kill9_and_restart() {
    let (_t, dir) = state_dir();
    let a = Arbiter::init(&dir);
    let d = a.client().test_and_set("ft-vm", 1, "host-a").unwrap();
    assert!(d.granted && d.owner == "host-a" && d.epoch == 1, "{d:?}");
    a.kill9();

    let a = Arbiter::start(&dir);
    let mut c = a.client();
    let d = c.test_and_set("ft-vm", 1, "host-b").unwrap();
    assert!(!d.granted && d.owner == "host-a" && d.epoch == 1, "{d:?}");
    let d = c.test_and_set("ft-vm", 1, "host-a").unwrap();
    assert!(d.granted, "same owner after restart: {d:?}");
    let d = c.test_and_set("ft-vm", 2, "host-b").unwrap();
    assert!(d.granted && d.owner == "host-b", "{d:?}");
    a.kill9();

    let a = Arbiter::start(&dir);
    let d = a.client().test_and_set("ft-vm", 1, "host-a").unwrap();
    assert!(
        !d.granted && d.stale && d.epoch == 2 && d.owner == "host-b",
        "{d:?}"
    );
}

#[test]
fn concurrent_clients_one_winner_per_round() {
    const ROUNDS: u64 = 50;
    let (_t, dir) = state_dir();
    let a = Arbiter::init(&dir);
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
    let (_t, dir) = state_dir();
    let a = Arbiter::init(&dir);
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
    let (_t, dir) = state_dir();
    let a = Arbiter::init(&dir);
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
    let (_t, dir) = state_dir();
    // Never initialised: no state file is an error, not an empty table.
    let out = run(&["status", "--state"], &dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no state file"), "{}", stderr(&out));
    let a = Arbiter::init(&dir);
    assert_eq!(
        status_cli(&dir).lines().count(),
        1,
        "header only when empty"
    );
    let mut c = a.client();
    assert!(c.test_and_set("ft-vm", 7, "host-b").unwrap().granted);
    assert!(!c.test_and_set("ft-vm", 7, "host-a").unwrap().granted);
    assert!(c.test_and_set("other-vm", 1, "host-a").unwrap().granted);
    let out = status_cli(&dir);
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
    let (_t, dir) = state_dir();
    let a = Arbiter::init(&dir);
    assert!(a.client().test_and_set("vm", 1, "host-a").unwrap().granted);

    // A second arbiter on the same directory would grant the same flag again.
    let out = run(
        &["serve", "--insecure", "--listen", "127.0.0.1:0", "--state"],
        &dir,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("locked"), "{out:?}");
    a.kill9();

    let state = dir.join("arbiter-state.json");
    std::fs::write(&state, "{\"version\":1,\"flags\":[{\"vm\":").unwrap();
    for args in [
        &["serve", "--insecure", "--listen", "127.0.0.1:0", "--state"][..],
        &["status", "--state"][..],
    ] {
        let out = run(args, &dir);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains("corrupt state file"), "{out:?}");
    }
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{\"version\":1,\"flags\":[{\"vm\":"
    );
}

/// `serve` and `serve --init` in the wrong case both refuse, and change nothing.
fn refused_start(dir: &std::path::Path, init: bool, why: &str) {
    let mut args = vec!["serve", "--insecure", "--listen", "127.0.0.1:0"];
    if init {
        args.push("--init");
    }
    args.push("--state");
    let out = run(&args, dir);
    assert!(!out.status.success(), "{args:?} started");
    assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "{args:?} listened");
}

#[test]
fn a_missing_state_file_is_not_a_fresh_start() {
    let (_t, dir) = state_dir();
    let state = dir.join("arbiter-state.json");
    // Never initialised: refused, and nothing is created.
    refused_start(&dir, false, "--init");
    assert!(!state.exists());

    let a = Arbiter::init(&dir);
    assert!(
        state.exists(),
        "--init writes the (empty) state before serving"
    );
    let d = a.client().test_and_set("ft-vm", 5, "host-a").unwrap();
    assert!(d.granted, "{d:?}");
    a.kill9();

    // --init never overwrites the epochs already granted.
    refused_start(&dir, true, "already exists");
    assert!(status_cli(&dir).contains("host-a"));

    // A deleted state file must not let epoch 5 be won a second time.
    std::fs::remove_file(&state).unwrap();
    refused_start(&dir, false, "no state file");
    assert!(!state.exists());

    // Only an explicit --init starts afresh (the operator's decision).
    let a = Arbiter::init(&dir);
    assert!(
        a.client()
            .test_and_set("ft-vm", 5, "host-b")
            .unwrap()
            .granted
    );
}

#[test]
fn an_epoch_far_ahead_of_the_clock_is_refused_and_a_genuine_one_still_wins() {
    let (_t, dir) = state_dir();
    let mut a = Arbiter::init(&dir);
    let mut c = a.client();
    let now = now_ms();
    for bogus in [u64::MAX, u64::MAX / 2, now + EPOCH_SLACK_MS + 60_000] {
        match c.test_and_set("ft-vm", bogus, "intruder") {
            Err(ClientError::Refused(e)) => {
                assert!(e.contains("ahead of the arbiter's clock"), "{bogus}: {e}")
            }
            other => panic!("epoch {bogus}: expected a refusal, got {other:?}"),
        }
    }
    // An explicit error reply on a connection that stays usable; nothing was stored.
    assert!(c.status().unwrap().is_empty());
    a.assert_alive();

    // A genuine failover: the epoch is the primary's clock when the backup joined (here a
    // host whose clock runs a minute ahead); one side wins, the other loses it.
    let epoch = now_ms() + 60_000;
    let d = c.test_and_set("ft-vm", epoch, "host-b").unwrap();
    assert!(d.granted && d.epoch == epoch, "{d:?}");
    let d = c.test_and_set("ft-vm", epoch, "host-a").unwrap();
    assert!(!d.granted && d.owner == "host-b" && !d.stale, "{d:?}");
    // The survivor re-protected: next_epoch = max(now, previous + 1).
    let next = epoch + 1;
    assert!(c.test_and_set("ft-vm", next, "host-b").unwrap().granted);
    assert!(
        a.log()
            .contains("refused (epoch 18446744073709551615 is more than"),
        "{}",
        a.log()
    );
}

#[test]
fn reset_is_the_way_to_clear_a_flag_and_never_runs_beside_a_server() {
    let (_t, dir) = state_dir();
    // A flag granted before epochs were bounded: every genuine epoch is stale behind it.
    std::fs::write(
        dir.join("arbiter-state.json"),
        format!(
            r#"{{"version":1,"flags":[{{"vm":"ft-vm","epoch":{},"owner":"intruder","granted_at_unix_ms":0}},
               {{"vm":"other-vm","epoch":3,"owner":"host-a","granted_at_unix_ms":0}}]}}"#,
            u64::MAX
        ),
    )
    .unwrap();
    let a = Arbiter::start(&dir);
    let d = a
        .client()
        .test_and_set("ft-vm", now_ms(), "host-a")
        .unwrap();
    assert!(!d.granted && d.stale && d.owner == "intruder", "{d:?}");
    assert!(
        a.log()
            .contains("is more than 600000 ms ahead of the clock")
            && a.log().contains("arbiter reset --state"),
        "startup warns about the flag: {}",
        a.log()
    );

    // Not while serving: the server would write the flag back.
    let out = run(&["reset", "ft-vm", "--state"], &dir);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    a.kill9();
    assert!(status_cli(&dir).contains("intruder"));

    let out = run(&["reset", "no-such-vm", "--state"], &dir);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no flag for vm no-such-vm"),
        "{}",
        stderr(&out)
    );
    let out = run(&["reset", "ft-vm", "--state"], &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("reset vm ft-vm") && said.contains("intruder"),
        "{said}"
    );
    let table = status_cli(&dir);
    assert!(
        !table.contains("intruder") && table.contains("other-vm"),
        "{table}"
    );

    // Failover works again; the other vm's flag still stands.
    let a = Arbiter::start(&dir);
    let mut c = a.client();
    let epoch = now_ms();
    assert!(c.test_and_set("ft-vm", epoch, "host-a").unwrap().granted);
    assert!(!c.test_and_set("ft-vm", epoch, "host-b").unwrap().granted);
    assert!(!c.test_and_set("other-vm", 3, "host-b").unwrap().granted);
}
