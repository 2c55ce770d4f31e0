//! FT socket server tests: handshake, garbage, one connection after another.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ft_control::{Message, Role, VERSION};

use super::*;
use crate::ft::tests::link;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn serve(timeout: Duration) -> (Dir, PathBuf, Arc<FtLink>) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vnft-ft-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ft.sock");
    // A stale socket file is replaced.
    drop(UnixListener::bind(&path).expect("stale socket"));
    let (_sink, link) = link();
    // The test process plays the VMM: it is the "vhost-user frontend".
    let frontend = FrontendSlot::new();
    frontend.set(Some(ft_control::local::PeerCred {
        pid: std::process::id() as i32,
        uid: ft_control::local::euid(),
        gid: 0,
    }));
    FtServer::bind(&path, link.clone(), frontend, None)
        .expect("bind")
        .with_handshake_timeout(timeout)
        .spawn()
        .expect("spawn");
    (Dir(dir), path, link)
}

fn client(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

fn hello(path: &Path, role: Role) -> UnixStream {
    let mut s = client(path);
    Message::Hello {
        version: VERSION,
        role,
    }
    .write_to(&mut s)
    .expect("hello");
    assert_eq!(
        Message::read_from(&mut s).expect("ack"),
        Some(Message::HelloAck { version: VERSION })
    );
    s
}

/// The server closed `s` (EOF, or a reset).
fn closed(mut s: UnixStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn handshake_sets_the_role_and_disconnect_returns_to_plain() {
    let (_d, path, link) = serve(HANDSHAKE_TIMEOUT);
    let s = hello(&path, Role::Primary);
    assert_eq!(link.role(), Role::Primary, "in force when HelloAck arrives");
    drop(s);
    wait_for("plain mode after disconnect", || link.role() == Role::Live);
    let mut s = hello(&path, Role::Live);
    assert_eq!(link.role(), Role::Live);
    Message::SetRole {
        role: Role::Primary,
    }
    .write_to(&mut s)
    .expect("set role");
    wait_for("SetRole Primary", || link.role() == Role::Primary);
}

#[test]
fn garbage_bad_versions_and_silent_clients_are_dropped_and_the_next_works() {
    let (_d, path, link) = serve(Duration::from_millis(300));
    // Garbage instead of Hello.
    let mut s = client(&path);
    s.write_all(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3])
        .expect("garbage");
    assert!(closed(s));
    // A message that is not Hello.
    let mut s = client(&path);
    Message::Release { id: 1 }
        .write_to(&mut s)
        .expect("release");
    assert!(closed(s));
    // A Hello of another version: no answer.
    let mut s = client(&path);
    Message::Hello {
        version: VERSION + 1,
        role: Role::Primary,
    }
    .write_to(&mut s)
    .expect("hello");
    assert!(closed(s));
    // Silence: dropped after the handshake timeout (by the acceptor: not a bad connection
    // of the server's), so it cannot block the next VMM.
    let s = client(&path);
    assert!(closed(s));
    assert_eq!(link.role(), Role::Live);
    // Garbage after a good handshake: dropped, back to plain.
    let mut s = hello(&path, Role::Primary);
    s.write_all(&[1, 0, 0, 0, 99]).expect("unknown type");
    assert!(closed(s));
    assert_eq!(link.role(), Role::Live);
    // A message only the backend sends: dropped too.
    let mut s = hello(&path, Role::Primary);
    Message::HelloAck { version: VERSION }
        .write_to(&mut s)
        .expect("ack");
    assert!(closed(s));
    wait_for("plain mode", || link.role() == Role::Live);
    // The next one works.
    let _s = hello(&path, Role::Primary);
    assert_eq!(link.role(), Role::Primary);
    assert_eq!(link.stats.snapshot().ft_bad_connections, 5);
    assert_eq!(link.stats.snapshot().ft_connections, 3);
}

#[test]
fn binding_refuses_to_replace_a_regular_file() {
    let dir = Dir(std::env::temp_dir().join(format!("vnft-ft-file-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let path = dir.0.join("not-a-socket");
    std::fs::write(&path, b"keep me").expect("file");
    let (_sink, link) = link();
    assert!(matches!(
        FtServer::bind(&path, link, FrontendSlot::new(), None),
        Err(FtError::Bind { .. })
    ));
    assert_eq!(std::fs::read(&path).expect("still there"), b"keep me");
}
