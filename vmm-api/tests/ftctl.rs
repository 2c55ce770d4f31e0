//! `ftctl` against stand-ins for a vmm's control socket: a fake that answers with typed
//! replies, one that never answers, and no socket at all. (Against a real FT pair:
//! integration/tests/ft_replication.rs and `make demo`.)

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};

use vmm_api::{FtStatus, Pic, Request, Role, RunState, Status};

const FTCTL: &str = env!("CARGO_BIN_EXE_ftctl");

fn ftctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(FTCTL)
        .arg("--api-sock")
        .arg(sock)
        .args(args)
        .output()
        .expect("run ftctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn primary_status(landmark: u64, bytes: u64) -> Status {
    let mut ft = FtStatus::off();
    ft.ft_role = Role::Primary;
    ft.ft_epoch = Some(1_764_000_000_000);
    ft.ft_link = Some("tls".into());
    ft.ft_protected = Some(true);
    ft.ft_records = Some(1000);
    ft.ft_bytes = Some(bytes);
    ft.ft_backup_landmark = Some(landmark - 5);
    ft.ft_lag_us_p50 = Some(120);
    ft.ft_lag_us_p99 = Some(900);
    ft.ft_hold_us_p50 = Some(150);
    ft.ft_hold_us_p99 = Some(1100);
    Status {
        state: RunState::Running,
        landmark,
        pio_in: 1,
        pio_out: 2,
        mmio_read: 3,
        mmio_write: 4,
        hlt: 5,
        interrupts_injected: 6,
        pic: Pic::default(),
        ft,
    }
}

/// A fake vmm on `sock`: answers each `status` with a primary whose landmark and log
/// bytes grow, `pause` with the status once paused, anything else with an error.
fn fake_vmm(sock: &Path) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(sock).expect("bind");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let mut w = conn.try_clone().expect("clone");
            let mut n = 0u64;
            for line in BufReader::new(conn).lines() {
                let Ok(line) = line else { break };
                n += 1;
                let reply = match serde_json::from_str::<Request>(&line) {
                    Ok(Request::Status) => {
                        let mut v = serde_json::to_value(primary_status(1000 * n, 125_000 * n))
                            .expect("json");
                        v["ok"] = true.into();
                        v.to_string()
                    }
                    Ok(Request::Pause { landmark }) => {
                        // As the vmm does: the status, once paused.
                        let mut paused = primary_status(landmark.unwrap_or(7), 0);
                        paused.state = RunState::Paused;
                        let mut v = serde_json::to_value(paused).expect("json");
                        v["ok"] = true.into();
                        v.to_string()
                    }
                    _ => r#"{"ok":false,"error":"pause the vCPU first"}"#.into(),
                };
                if writeln!(w, "{reply}").is_err() {
                    break;
                }
            }
        }
    })
}

#[test]
fn status_watch_and_commands_against_a_vmm() {
    let dir = tempfile::tempdir().expect("dir");
    let sock = dir.path().join("api.sock");
    let _vmm = fake_vmm(&sock);

    let out = ftctl(&sock, &["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for want in [
        "state        running",
        "role         primary",
        "link         tls",
        "protected    yes",
        "backup at    landmark 995 (5 behind)",
        "ack lag      p50 120 us, p99 900 us",
    ] {
        assert!(table.contains(want), "no {want:?} in:\n{table}");
    }

    let out = ftctl(&sock, &["status", "--json"]);
    let back: Status = serde_json::from_slice(&out.stdout).expect("status --json is a Status");
    assert_eq!(back.ft.ft_role, Role::Primary);

    // Two lines 0.2 s apart: 125000 bytes more each time, about 5 Mbit/s.
    let out = ftctl(&sock, &["watch", "--interval", "0.2", "--count", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].contains("log_mbit"), "{lines:?}");
    let mbit: f64 = lines[2]
        .split_whitespace()
        .nth(5)
        .unwrap()
        .parse()
        .expect("Mbit/s");
    assert!(mbit > 1.0 && mbit < 6.0, "{mbit} Mbit/s: {lines:?}");

    let out = ftctl(&sock, &["pause", "--landmark", "42"]);
    assert_eq!(text(&out.stdout).trim(), "paused at landmark 42");
    // The vmm's refusal: one line, exit 1.
    let out = ftctl(&sock, &["digest"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "ftctl: the vmm refused: pause the vCPU first\n"
    );
}

#[test]
fn failures_are_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().expect("dir");
    // No socket.
    let missing = dir.path().join("none.sock");
    let out = ftctl(&missing, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("ftctl: no control socket at"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A command ftctl does not know.
    let out = ftctl(&missing, &["reboot"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("unrecognized subcommand 'reboot'"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A vmm that accepts and never answers.
    let sock = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let hold = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let out = ftctl(&sock, &["--timeout-ms", "300", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "ftctl: the vmm did not answer within 300 ms\n"
    );
    drop(hold.join());
}
