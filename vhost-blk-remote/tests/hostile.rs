//! Hostile peers of the vhost-blk-remote binary (docs/ARCHITECTURE.md, "Hostile peers"):
//! each one happens, the backend keeps serving, and a genuine frontend then works. Needs
//! root (other users are played by forked children that change their uid).

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::ft::{FtClient, FtRig};
use common::*;
use ft_control::{Message, Role, VERSION};
use vhost_harness::{closed_within, connect_from_child, ChildIds, Desc, Harness, HarnessConfig};
use vm_memory::GuestAddress;

const SIZE: u64 = 4 << 20;
const T: Duration = Duration::from_secs(15);
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const NOBODY: u32 = 65534;

/// The FT rig of the common module, with what these tests do to it.
struct Rig(FtRig);

impl std::ops::Deref for Rig {
    type Target = FtRig;
    fn deref(&self) -> &FtRig {
        &self.0
    }
}

impl std::ops::DerefMut for Rig {
    fn deref_mut(&mut self) -> &mut FtRig {
        &mut self.0
    }
}

impl Rig {
    fn new(tag: &str, extra: &[&str]) -> Rig {
        Rig(FtRig::start(tag, SIZE as usize, extra))
    }

    fn log(&self) -> PathBuf {
        self.t.path("backend.log")
    }

    #[track_caller]
    fn wait_log(&self, what: &str) {
        wait_for_log(&self.log(), what, T);
    }

    fn harness(&self) -> Harness {
        Harness::connect(&self.vsock, HarnessConfig::default()).expect("harness connects")
    }

    /// Restarts qemu-nbd on the image, with `extra` options.
    fn restart_nbd(&mut self, extra: &[&str], n: u32) {
        if let Some(mut q) = self.qemu.take() {
            q.kill();
        }
        let log = self.t.path(&format!("qemu{n}.log"));
        self.qemu = Some(qemu_nbd_with(
            &self.img,
            "disk",
            Listen::Unix(&self.nsock),
            false,
            extra,
            &log,
        ));
    }

    #[track_caller]
    fn alive(&mut self) {
        assert!(self.backend.is_running(), "the backend must survive");
    }
}

/// One request through the used ring (plain mode): its status and the data read.
fn request(h: &mut Harness, rtype: u32, sector: u64, out: &[u8], in_len: u32) -> (u8, Vec<u8>) {
    let mut hdr = [0u8; 16];
    hdr[0..4].copy_from_slice(&rtype.to_le_bytes());
    hdr[8..16].copy_from_slice(&sector.to_le_bytes());
    let ha = h.alloc(16, 16).expect("alloc");
    h.write(ha, &hdr).expect("header");
    let mut descs = vec![Desc::readable(ha, 16)];
    let mut data = GuestAddress(0);
    if !out.is_empty() {
        data = h.alloc(out.len() as u64, 512).expect("alloc");
        h.write(data, out).expect("data");
        descs.push(Desc::readable(data, out.len() as u32));
    }
    if in_len > 0 {
        data = h.alloc(u64::from(in_len), 512).expect("alloc");
        descs.push(Desc::writable(data, in_len));
    }
    let st = h.alloc(1, 1).expect("alloc");
    h.write(st, &[0xff]).expect("status");
    descs.push(Desc::writable(st, 1));
    h.submit(0, &descs, T).expect("completion");
    let status = h.read(st, 1).expect("status")[0];
    let read = if in_len > 0 {
        h.read(data, in_len as usize).expect("data")
    } else {
        Vec::new()
    };
    (status, read)
}

/// A genuine frontend writes a sector and reads it back.
#[track_caller]
fn genuine_round_trip(rig: &Rig, sector: u64, byte: u8) {
    let mut h = rig.harness();
    assert_eq!(
        request(&mut h, T_OUT, sector, &[byte; 512], 0).0,
        S_OK,
        "write"
    );
    let (st, data) = request(&mut h, T_IN, sector, &[], 512);
    assert_eq!(st, S_OK, "read");
    assert_bytes(&data, &[byte; 512], "read back");
    assert_bytes(
        &read_file_at(&rig.img, sector * 512, 512),
        &[byte; 512],
        "on disk",
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("socket").permissions().mode() & 0o777
}

fn nobody(groups: &[u32]) -> ChildIds {
    ChildIds {
        uid: NOBODY,
        gid: NOBODY,
        groups: groups.to_vec(),
    }
}

#[test]
fn sockets_are_owner_only() {
    let mut rig = Rig::new("hmode", &[]);
    assert_eq!(mode(&rig.vsock), 0o600, "vhost-user socket");
    assert_eq!(mode(&rig.fsock), 0o600, "FT socket");
    for p in [&rig.vsock, &rig.fsock] {
        let e = connect_from_child(p, Some(&nobody(&[]))).expect_err("another user");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::PermissionDenied,
            "{}",
            p.display()
        );
    }
    rig.alive();
    genuine_round_trip(&rig, 3, 0x31);
}

#[test]
fn a_socket_group_opens_the_sockets_to_it_and_peers_are_still_checked() {
    let mut rig = Rig::new("hgroup", &["--socket-group", "4242"]);
    for p in [&rig.vsock, &rig.fsock] {
        assert_eq!(mode(p), 0o660, "{}", p.display());
        assert_eq!(std::fs::metadata(p).expect("socket").gid(), 4242);
    }
    // Outside the group: the file mode keeps it out.
    let e = connect_from_child(&rig.vsock, Some(&nobody(&[]))).expect_err("no access");
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    // In the group only as a supplementary group: the file lets it connect, but SO_PEERCRED
    // shows another user whose group is not the socket group: refused at once.
    let s = connect_from_child(&rig.vsock, Some(&nobody(&[4242]))).expect("file access");
    assert!(
        closed_within(&s, T).expect("read"),
        "refused by the peer check"
    );
    rig.wait_log("refusing pid");
    rig.alive();
    genuine_round_trip(&rig, 4, 0x42);
}

/// Starts the backend on `socket` (something already there) and expects it to refuse.
fn expect_refusal(t: &TempDir, socket: &Path, want: &str) {
    let name = socket
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("x")
        .to_string();
    let nsock = t.path(&format!("mem-{name}.sock"));
    let _nbd = nbdkit(
        &nsock,
        &["memory", "1M"],
        &t.path(&format!("nbdkit-{name}.log")),
    );
    let log = t.path(&format!("refused-{name}.log"));
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vhost-blk-remote"));
    c.arg("--socket")
        .arg(socket)
        .arg("--nbd")
        .arg(unix_uri("", &nsock));
    let mut p = spawn(c, "vhost-blk-remote", &log);
    let deadline = Instant::now() + T;
    let status = loop {
        if let Ok(Some(st)) = p.child.try_wait() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the backend did not refuse {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "exit status {status}");
    wait_for_log(&log, want, T);
}

#[test]
fn a_stale_path_is_replaced_only_if_it_is_our_socket() {
    let t = TempDir::new("hstale");
    let file = t.path("notes.txt");
    std::fs::write(&file, b"keep me").expect("file");
    expect_refusal(&t, &file, "exists and is not a socket");
    assert_eq!(std::fs::read(&file).expect("kept"), b"keep me");
    let link = t.path("link.sock");
    std::os::unix::fs::symlink(t.path("elsewhere.sock"), &link).expect("symlink");
    expect_refusal(&t, &link, "is a symbolic link");
    let theirs = t.path("theirs.sock");
    drop(std::os::unix::net::UnixListener::bind(&theirs).expect("socket"));
    std::os::unix::fs::lchown(&theirs, Some(NOBODY), None).expect("chown");
    expect_refusal(&t, &theirs, "belongs to uid 65534");
    assert!(theirs.exists(), "their socket is left alone");
}

#[test]
fn a_memory_region_longer_than_its_file_is_refused_before_it_is_mapped() {
    let mut rig = Rig::new("hshort", &[]);
    let closed = vhost_harness::send_short_memory_table(&rig.vsock, T).expect("hostile table");
    assert!(closed, "the connection is dropped");
    rig.wait_log("extends past the end of that file");
    rig.alive();
    genuine_round_trip(&rig, 5, 0x55);
    rig.alive();
}

#[test]
fn silent_frontends_are_dropped_and_delay_nobody() {
    let mut rig = Rig::new("hsilent", &[]);
    let silent: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&rig.vsock).expect("connect"))
        .collect();
    let t0 = Instant::now();
    genuine_round_trip(&rig, 6, 0x66);
    assert!(
        t0.elapsed() < vhost_user_guard_handshake() / 2,
        "the genuine frontend waited {:?} behind silent ones",
        t0.elapsed()
    );
    for s in &silent {
        assert!(
            closed_within(s, T).expect("read"),
            "a silent connection is closed"
        );
    }
    assert!(t0.elapsed() >= vhost_user_guard_handshake() - Duration::from_millis(500));
    rig.wait_log("said nothing");
    rig.alive();
    genuine_round_trip(&rig, 7, 0x77);
}

/// The vhost-user handshake timeout (`vhost_user_guard::HANDSHAKE_TIMEOUT`, 5 s).
fn vhost_user_guard_handshake() -> Duration {
    Duration::from_secs(5)
}

fn hello(role: Role) -> Vec<u8> {
    Message::Hello {
        version: VERSION,
        role,
    }
    .encode()
}

#[test]
fn ft_mode_is_only_for_the_process_of_the_vhost_user_frontend() {
    use std::io::Write;
    let mut rig = Rig::new("hftpid", &[]);
    // Nobody owns the vhost-user connection yet: even our own Hello is refused.
    let mut s = common::ft::connect_retry(&rig.fsock);
    s.write_all(&hello(Role::Primary)).expect("hello");
    assert!(
        closed_within(&s, T).expect("read"),
        "refused without a frontend"
    );
    rig.wait_log("no vhost-user frontend is connected");
    // A standalone VM: our harness is the frontend. Another process says Hello(Primary).
    let mut h = rig.harness();
    let mut s = connect_from_child(&rig.fsock, None).expect("child connects");
    s.write_all(&hello(Role::Primary)).expect("hello");
    assert!(
        closed_within(&s, T).expect("read"),
        "refused: not the frontend's process"
    );
    rig.wait_log("is not the vhost-user frontend");
    // The VM's writes are not captured: they complete and reach the disk.
    assert_eq!(request(&mut h, T_OUT, 8, &[0x88; 512], 0).0, S_OK);
    assert_bytes(
        &read_file_at(&rig.img, 8 * 512, 512),
        &[0x88; 512],
        "written",
    );
    // The frontend's own process gets FT mode.
    let c = FtClient::connect(&rig.fsock, Role::Primary);
    let mut hdr = [0u8; 16];
    hdr[0..4].copy_from_slice(&T_OUT.to_le_bytes());
    hdr[8..16].copy_from_slice(&9u64.to_le_bytes());
    let ha = h.alloc(16, 16).expect("alloc");
    h.write(ha, &hdr).expect("header");
    let data = h.alloc(512, 512).expect("alloc");
    h.write(data, &[0x99; 512]).expect("data");
    let st = h.alloc(1, 1).expect("alloc");
    h.add_chain(
        0,
        &[
            Desc::readable(ha, 16),
            Desc::readable(data, 512),
            Desc::writable(st, 1),
        ],
    )
    .expect("chain");
    h.kick(0).expect("kick");
    let (id, _, _) = c.output(T);
    c.send(&Message::Release { id });
    c.completion(T);
    assert_bytes(
        &read_file_at(&rig.img, 9 * 512, 512),
        &[0x99; 512],
        "released",
    );
    rig.alive();
}

#[test]
fn the_ft_socket_bounds_frames_and_time() {
    use std::io::Write;
    let mut rig = Rig::new("hftlim", &[]);
    let h = rig.harness();
    // An oversized length before the Hello: closed at once, nothing allocated.
    let mut s = common::ft::connect_retry(&rig.fsock);
    s.write_all(&(1u32 << 30).to_le_bytes()).expect("length");
    assert!(closed_within(&s, T).expect("read"), "oversized frame");
    rig.wait_log("exceeds the limit");
    // A silent client does not delay the VMM, and is closed after the Hello timeout (2 s).
    let silent = common::ft::connect_retry(&rig.fsock);
    let t0 = Instant::now();
    let c = FtClient::connect(&rig.fsock, Role::Primary);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "not delayed: {:?}",
        t0.elapsed()
    );
    assert!(
        closed_within(&silent, T).expect("read"),
        "silent client closed"
    );
    rig.wait_log("said nothing");
    // After the Hello: a frame cut in the middle ends the connection within the frame
    // timeout (2 s), so that the next VMM can connect.
    c.send_raw(&[9, 0]);
    assert!(c.closed_within(T), "stalled connection dropped");
    rig.wait_log("stopped in the middle of a frame");
    drop(c);
    let c = FtClient::connect(&rig.fsock, Role::Live);
    c.expect_nothing(Duration::from_millis(300));
    rig.alive();
    drop((c, h));
    genuine_round_trip(&rig, 10, 0xaa);
}

#[test]
fn an_export_that_changes_across_a_reconnect_is_refused_until_it_is_back() {
    let mut rig = Rig::new("hexport", &[]);
    let mut h = rig.harness();
    assert_eq!(request(&mut h, T_IN, 0, &[], 512).0, S_OK);
    // The export shrinks while the backend is disconnected.
    if let Some(mut q) = rig.qemu.take() {
        q.kill();
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&rig.img)
        .and_then(|f| f.set_len(SIZE / 2))
        .expect("shrink");
    rig.restart_nbd(&[], 2);
    assert_eq!(
        request(&mut h, T_IN, 0, &[], 512).0,
        S_IOERR,
        "refused, not served"
    );
    rig.wait_log("refusing the changed export");
    let last = SIZE / 512 - 1;
    assert_eq!(request(&mut h, T_IN, last, &[], 512).0, S_IOERR);
    assert_eq!(request(&mut h, T_OUT, 1, &[1; 512], 0).0, S_IOERR);
    // Back to its size: served again.
    if let Some(mut q) = rig.qemu.take() {
        q.kill();
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&rig.img)
        .and_then(|f| f.set_len(SIZE))
        .expect("grow back");
    rig.restart_nbd(&[], 3);
    let deadline = Instant::now() + T;
    while request(&mut h, T_IN, 0, &[], 512).0 != S_OK {
        assert!(
            Instant::now() < deadline,
            "the export as it was is served again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    rig.wait_log("is back as it was");
    // Its flags change (read-only): refused too.
    rig.restart_nbd(&["--read-only"], 4);
    let deadline = Instant::now() + T;
    while request(&mut h, T_IN, 0, &[], 512).0 != S_IOERR {
        assert!(Instant::now() < deadline, "a read-only export is refused");
        std::thread::sleep(Duration::from_millis(200));
    }
    rig.restart_nbd(&[], 5);
    let deadline = Instant::now() + T;
    while request(&mut h, T_OUT, 2, &[0x22; 512], 0).0 != S_OK {
        assert!(Instant::now() < deadline, "writable again");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_bytes(&read_file_at(&rig.img, 1024, 512), &[0x22; 512], "written");
    rig.alive();
}

#[test]
fn requests_beyond_the_end_of_the_export_fail_before_they_are_sent() {
    // An export that does not end on a sector boundary: 2048 whole sectors and 424 bytes.
    let t = TempDir::new("hend");
    let nsock = t.path("nbd.sock");
    let nlog = t.path("requests.log");
    let filter_log = format!("logfile={}", nlog.display());
    let _nbd = nbdkit(
        &nsock,
        &["--filter=log", "memory", "size=1049000", &filter_log],
        &t.path("nbdkit.log"),
    );
    let vsock = t.path("vhost.sock");
    let mut b = backend(&vsock, &unix_uri("", &nsock), &[], &t.path("backend.log"));
    let mut h = Harness::connect(&vsock, HarnessConfig::default()).expect("harness");
    assert_eq!(
        request(&mut h, T_IN, 2047, &[], 512).0,
        S_OK,
        "the last whole sector"
    );
    assert_eq!(
        request(&mut h, T_IN, 2048, &[], 512).0,
        S_IOERR,
        "the partial one"
    );
    assert_eq!(
        request(&mut h, T_IN, 2047, &[], 1024).0,
        S_IOERR,
        "across the end"
    );
    assert_eq!(
        request(&mut h, T_OUT, 1 << 40, &[7; 512], 0).0,
        S_IOERR,
        "far beyond"
    );
    assert_eq!(request(&mut h, T_OUT, 2040, &[7; 512], 0).0, S_OK, "inside");
    let sent = std::fs::read_to_string(&nlog).expect("request log");
    let reads: Vec<&str> = sent.lines().filter(|l| l.contains(" Read id=")).collect();
    assert_eq!(reads.len(), 1, "only the good read was sent:\n{sent}");
    assert!(
        reads[0].contains("offset=0xffe00 "),
        "sector 2047: {}",
        reads[0]
    );
    let writes = sent.lines().filter(|l| l.contains(" Write id=")).count();
    assert_eq!(writes, 1, "only the good write was sent:\n{sent}");
    assert!(b.is_running());
}
