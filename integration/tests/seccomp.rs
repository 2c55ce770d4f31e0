//! Seccomp (issue 13, point 6): every thread of both VMMs of a protected pair runs under a
//! seccomp filter (`Seccomp: 2` in /proc/PID/task/TID/status), and the pair fails over with the
//! filters on (the unit tests of `vmm::seccomp` check that a denied call is named).

use std::time::Duration;

use integration::cluster::Cluster;

/// (thread name, seccomp mode) of every thread of `pid`.
fn threads(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir");
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push((field("Name:"), field("Seccomp:")));
    }
    out
}

fn assert_all_filtered(pid: u32, who: &str, must_have: &[&str]) {
    let list = threads(pid);
    for name in must_have {
        assert!(
            list.iter().any(|(n, _)| n == name),
            "{who}: no thread {name} in {list:?}"
        );
    }
    for (name, mode) in &list {
        assert_eq!(mode, "2", "{who}: thread {name} is not filtered: {list:?}");
    }
}

#[test]
fn every_thread_of_a_protected_pair_is_filtered_and_it_fails_over() {
    let mut c = Cluster::start(None, "", true).expect("cluster");
    assert_eq!(
        c.lab.redis_cli(&["set", "sc:key", "v1"]).expect("set"),
        "OK"
    );
    let primary = c.primary_host().vmm.pid().expect("primary pid");
    assert_all_filtered(
        primary,
        "primary",
        &[
            "vmm",
            "vcpu0",
            "event-loop",
            "ft-log-writer",
            "ft-ack-reader",
            "ft-control",
            "ft-tls-connect",
            "ft-tls-relay",
        ],
    );
    let backup = c
        .backup_host()
        .expect("backup")
        .vmm
        .pid()
        .expect("backup pid");
    assert_all_filtered(
        backup,
        "backup",
        &[
            "vmm",
            "vcpu0",
            "event-loop",
            "ft-log-reader",
            "ft-tls-relay",
        ],
    );

    let _dead = c.kill_primary();
    c.wait_live(Duration::from_secs(10))
        .expect("backup goes live");
    assert_eq!(c.lab.redis_cli(&["get", "sc:key"]).expect("get"), "v1");
    assert_eq!(
        c.lab.redis_cli(&["set", "sc:key", "v2"]).expect("set"),
        "OK"
    );
    // The survivor started FT threads at go-live; they are filtered too.
    let live = c.primary_host().vmm.pid().expect("live pid");
    assert_all_filtered(live, "survivor", &["vcpu0", "event-loop", "ft-tls-connect"]);
}
