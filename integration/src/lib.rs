//! End-to-end test support: network namespaces joined by a bridge, the processes of the
//! product started inside them, and a small RESP client. Everything created here is torn
//! down by `Drop` guards, also when a test fails (panics unwind through them).

pub mod api;
pub mod cgroup;
pub mod cluster;
pub mod etcd;
pub mod metrics;
pub mod netns;
pub mod plot;
pub mod proc;
pub mod resp;
pub mod stack;
pub mod topology;
pub mod workload;

/// Path of a file in the repository, from this crate's directory.
pub fn repo_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// Panics unless the machine can run these tests (root, /dev/kvm, the built binaries and
/// guest). They never skip silently.
pub fn require_environment() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "end-to-end tests need root (network namespaces, TAP devices)"
    );
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    assert!(
        kvm.is_ok(),
        "end-to-end tests need /dev/kvm: {:?}",
        kvm.err()
    );
    for bin in [
        "target/release/vmm",
        "target/release/vhost-net-ft",
        "target/release/vhost-blk-remote",
        "target/release/arbiter",
        "build/guest.elf",
    ] {
        assert!(
            repo_path(bin).exists(),
            "{bin} is missing: run `make build guest` (make test does)"
        );
    }
}
