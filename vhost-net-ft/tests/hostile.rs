//! Hostile peers of the vhost-net-ft binary (docs/ARCHITECTURE.md, "Hostile peers"): each
//! one happens, the backend keeps serving, and a genuine frontend then sends a frame that
//! reaches the TAP. Needs root (a network namespace; other users are played by forked
//! children that change their uid).

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use ft_control::{Message, Role, VERSION};
use vhost_harness::{closed_within, connect_from_child, ChildIds, Desc, Harness, HarnessConfig};
use vm_memory::GuestAddress;

const T: Duration = Duration::from_secs(10);
const TX: usize = 1;
const HDR: usize = 12;

/// Field order is drop order: socket, backend, directory, namespace.
struct Rig {
    sock: PacketSocket,
    backend: Backend,
    fsock: PathBuf,
    _dir: TempDir,
    _ns: NetNs,
}

impl Rig {
    fn new() -> Rig {
        let ns = NetNs::new();
        let dir = TempDir::new();
        let fsock = dir.0.join("ft.sock");
        let backend = Backend::start_with(
            &ns,
            &dir.0,
            "vnfth0",
            GUEST_MAC_STR,
            &[OsStr::new("--ft-socket"), fsock.as_os_str()],
        );
        let deadline = Instant::now() + T;
        while !fsock.exists() {
            assert!(Instant::now() < deadline, "no FT socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        let sock = ns
            .run_in(|| PacketSocket::open("vnfth0"))
            .expect("packet socket on the TAP");
        Rig {
            sock,
            backend,
            fsock,
            _dir: dir,
            _ns: ns,
        }
    }

    fn harness(&self) -> Harness {
        let cfg = HarnessConfig {
            num_queues: 2,
            ..Default::default()
        };
        Harness::connect(&self.backend.socket, cfg).expect("frontend connects")
    }

    #[track_caller]
    fn wait_log(&self, what: &str) {
        let deadline = Instant::now() + T;
        while !self.backend.log_text().contains(what) {
            assert!(
                Instant::now() < deadline,
                "no {what:?} in:\n{}",
                self.backend.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `h` sends a frame tagged `tag`; it must reach the TAP.
    #[track_caller]
    fn frame_leaves(&self, h: &mut Harness, tag: u32) {
        let frame = test_frame(BROADCAST, GUEST_MAC, tag, 64);
        let a = h.alloc(200, 16).expect("alloc");
        h.write(a, &[0u8; HDR]).expect("hdr");
        h.write(GuestAddress(a.0 + HDR as u64), &frame)
            .expect("frame");
        h.submit(TX, &[Desc::readable(a, (HDR + frame.len()) as u32)], T)
            .expect("TX completes");
        let got = self
            .sock
            .recv_matching(T, |f| is_test_frame(f, tag))
            .expect("the frame reaches the TAP");
        assert_eq!(got, frame);
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("socket").permissions().mode() & 0o777
}

#[test]
fn sockets_are_owner_only_and_other_users_get_eacces() {
    let mut rig = Rig::new();
    let nobody = ChildIds {
        uid: 65534,
        gid: 65534,
        groups: vec![],
    };
    for p in [&rig.backend.socket, &rig.fsock] {
        assert_eq!(mode(p), 0o600, "{}", p.display());
        let e = connect_from_child(p, Some(&nobody)).expect_err("another user");
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    }
    assert!(rig.backend.alive());
    let mut h = rig.harness();
    rig.frame_leaves(&mut h, 70);
}

#[test]
fn a_memory_region_longer_than_its_file_is_refused_before_it_is_mapped() {
    let mut rig = Rig::new();
    let closed =
        vhost_harness::send_short_memory_table(&rig.backend.socket, T).expect("hostile table");
    assert!(closed, "the connection is dropped");
    rig.wait_log("extends past the end of that file");
    assert!(rig.backend.alive(), "no SIGBUS");
    let mut h = rig.harness();
    rig.frame_leaves(&mut h, 71);
    assert!(rig.backend.alive());
}

#[test]
fn silent_frontends_are_dropped_and_delay_nobody() {
    let mut rig = Rig::new();
    let silent: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&rig.backend.socket).expect("connect"))
        .collect();
    let t0 = Instant::now();
    let mut h = rig.harness();
    rig.frame_leaves(&mut h, 72);
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "delayed {:?}",
        t0.elapsed()
    );
    for s in &silent {
        assert!(
            closed_within(s, T).expect("read"),
            "silent connection closed"
        );
    }
    rig.wait_log("said nothing");
    assert!(rig.backend.alive());
    drop(h);
    let mut h = rig.harness();
    rig.frame_leaves(&mut h, 73);
}

#[test]
fn ft_mode_is_only_for_the_process_of_the_vhost_user_frontend() {
    let mut rig = Rig::new();
    let mut h = rig.harness();
    let hello = Message::Hello {
        version: VERSION,
        role: Role::Primary,
    }
    .encode();
    let mut s = connect_from_child(&rig.fsock, None).expect("child connects");
    s.write_all(&hello).expect("hello");
    assert!(
        closed_within(&s, T).expect("read"),
        "refused: not the frontend's process"
    );
    rig.wait_log("is not the vhost-user frontend");
    // Not captured: the frame leaves and the chain completes in the used ring.
    rig.frame_leaves(&mut h, 74);
    // The frontend's own process gets FT mode.
    let mut v = UnixStream::connect(&rig.fsock).expect("connect");
    v.write_all(&hello).expect("hello");
    v.set_read_timeout(Some(T)).expect("timeout");
    assert_eq!(
        Message::read_from(&mut v).expect("ack"),
        Some(Message::HelloAck { version: VERSION })
    );
    assert!(rig.backend.alive());
}
