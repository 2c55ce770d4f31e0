//! The server with a recording backend: handshake, refusals, garbage, one connection after
//! another. (Each backend's own tests check what it does with the calls.)

use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Instant;

use ft_control::local::{euid, PeerCred};
use ft_control::VERSION;

use super::*;

/// Records what the server asks of a backend.
#[derive(Default)]
struct Recorder {
    conn: Mutex<Option<(VmmConn, Role)>>,
    events: Mutex<Vec<String>>,
    bad: Mutex<u32>,
}

impl Recorder {
    fn role(&self) -> Role {
        let c = self.conn.lock().expect("lock");
        c.as_ref().map_or(Role::Live, |(_, r)| *r)
    }
    fn events(&self) -> Vec<String> {
        self.events.lock().expect("lock").clone()
    }
    fn note(&self, e: String) {
        self.events.lock().expect("lock").push(e);
    }
    fn bad(&self) -> u32 {
        *self.bad.lock().expect("lock")
    }
}

impl FtBackend for Recorder {
    fn attach(&self, mut conn: VmmConn, role: Role) -> Result<(), ControlError> {
        let mut c = self.conn.lock().expect("lock");
        self.note(format!("attach {} {role:?}", conn.serial()));
        conn.greet()?;
        *c = Some((conn, role));
        Ok(())
    }
    fn release(&self, serial: u64, id: u64) {
        self.note(format!("release {serial} {id}"));
    }
    fn set_role(&self, serial: u64, role: Role) {
        if let Some((c, r)) = self.conn.lock().expect("lock").as_mut() {
            if c.serial() == serial {
                *r = role;
            }
        }
    }
    fn detach(&self, serial: u64, _why: &str) {
        let mut c = self.conn.lock().expect("lock");
        if c.as_ref().is_some_and(|(c, _)| c.serial() == serial) {
            *c = None;
        }
        self.note(format!("detach {serial}"));
    }
    fn bad_connection(&self) {
        *self.bad.lock().expect("lock") += 1;
    }
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(what: &str) -> Dir {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ftb-{what}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    Dir(dir)
}

/// A server whose "vhost-user frontend" is the process `frontend_pid`.
fn serve(timeout: Duration, frontend_pid: u32) -> (Dir, PathBuf, Arc<Recorder>) {
    let dir = temp_dir("srv");
    let path = dir.0.join("ft.sock");
    // A stale socket file is replaced.
    drop(UnixListener::bind(&path).expect("stale socket"));
    let backend = Arc::new(Recorder::default());
    let frontend = FrontendSlot::new();
    frontend.set(Some(PeerCred {
        pid: i32::try_from(frontend_pid).expect("pid"),
        uid: euid(),
        gid: 0,
    }));
    FtServer::bind(&path, backend.clone(), frontend, None)
        .expect("bind")
        .with_handshake_timeout(timeout)
        .spawn()
        .expect("spawn");
    (dir, path, backend)
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
fn handshake_attaches_with_the_role_and_messages_carry_the_serial() {
    let (_d, path, b) = serve(HELLO_TIMEOUT, std::process::id());
    let mut s = hello(&path, Role::Primary);
    assert_eq!(b.role(), Role::Primary, "in force when HelloAck arrives");
    Message::Release { id: 7 }
        .write_to(&mut s)
        .expect("release");
    wait_for("release", || b.events().contains(&"release 1 7".into()));
    drop(s);
    wait_for("detach", || b.role() == Role::Live);
    let mut s = hello(&path, Role::Live);
    Message::SetRole {
        role: Role::Primary,
    }
    .write_to(&mut s)
    .expect("set role");
    wait_for("SetRole Primary", || b.role() == Role::Primary);
    assert_eq!(
        b.events(),
        [
            "attach 1 Primary",
            "release 1 7",
            "detach 1",
            "attach 2 Live"
        ]
    );
}

#[test]
fn a_process_that_is_not_the_frontend_is_refused_before_its_hello_is_read() {
    // The frontend is some other process (pid 1): this one may not take FT mode.
    let (_d, path, b) = serve(HELLO_TIMEOUT, 1);
    let mut s = client(&path);
    Message::Hello {
        version: VERSION,
        role: Role::Primary,
    }
    .write_to(&mut s)
    .expect("hello");
    assert!(closed(s), "no HelloAck");
    wait_for("counted", || b.bad() == 1);
    assert!(b.events().is_empty(), "nothing attached");
}

#[test]
fn garbage_bad_versions_and_silent_clients_are_dropped_and_the_next_works() {
    let (_d, path, b) = serve(Duration::from_millis(300), std::process::id());
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
    assert!(closed(client(&path)));
    assert_eq!(b.role(), Role::Live);
    // Garbage after a good handshake: dropped, detached.
    let mut s = hello(&path, Role::Primary);
    s.write_all(&[1, 0, 0, 0, 99]).expect("unknown type");
    assert!(closed(s));
    wait_for("detached", || b.role() == Role::Live);
    // A message only a backend sends: dropped too.
    let mut s = hello(&path, Role::Primary);
    Message::HelloAck { version: VERSION }
        .write_to(&mut s)
        .expect("ack");
    assert!(closed(s));
    wait_for("detached", || b.role() == Role::Live);
    // The next one works.
    let _s = hello(&path, Role::Primary);
    assert_eq!(b.role(), Role::Primary);
    assert_eq!(b.bad(), 5);
}

#[test]
fn a_send_that_fails_shuts_the_connection_down_for_both_sides() {
    let (ours, theirs) = UnixStream::pair().expect("pair");
    let mut conn = VmmConn::new(ours, 3).expect("conn");
    drop(theirs);
    assert!(conn.send(&Message::Release { id: 1 }).is_err());
    assert_eq!(conn.serial(), 3);
}

#[test]
fn binding_refuses_to_replace_a_regular_file() {
    let dir = temp_dir("file");
    let path = dir.0.join("not-a-socket");
    std::fs::write(&path, b"keep me").expect("file");
    assert!(matches!(
        FtServer::bind(
            &path,
            Arc::new(Recorder::default()),
            FrontendSlot::new(),
            None
        ),
        Err(ServerError::Bind { .. })
    ));
    assert_eq!(std::fs::read(&path).expect("still there"), b"keep me");
}
