//! Test fixtures: temporary directories, NBD servers (qemu-nbd, nbdkit) and the backend
//! process, all cleaned up on Drop (also when the test fails).

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
#![allow(dead_code)]

pub mod ft;

use std::fs::{self, File};
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Routes the library's log to the test output (shown for failing tests).
pub fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A directory under /tmp removed on Drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        init_log();
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "vbr-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Creates a file of `size` bytes filled with a recognisable pattern.
pub fn make_image(path: &Path, size: usize) {
    let data: Vec<u8> = (0..size).map(|i| (i / 512) as u8 ^ 0x5a).collect();
    fs::write(path, data).expect("write image");
}

pub fn read_file_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path).expect("open image");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let mut v = vec![0u8; len];
    f.read_exact(&mut v).expect("read image");
    v
}

/// A child process killed (SIGKILL) and reaped on Drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: Option<PathBuf>,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            if let Some(log) = &self.log {
                let text = fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                eprintln!("---- last lines of {} log ----", self.name);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

fn which(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn require(prog: &str, package: &str) {
    assert!(
        which(prog),
        "{prog} is not installed (Debian package {package}); it is needed by this test"
    );
}

/// Waits until a Unix socket accepts connections.
pub fn wait_unix(path: &Path, proc_: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if UnixStream::connect(path).is_ok() {
            return;
        }
        assert!(proc_.is_running(), "{} exited early", proc_.name);
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} did not listen on {}", proc_.name, path.display());
}

/// A free TCP port on 127.0.0.1 (best effort).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Where qemu-nbd listens.
pub enum Listen<'a> {
    Unix(&'a Path),
    Tcp(u16),
}

/// `qemu-nbd -f raw -x EXPORT` on `image`, persistent (survives client disconnects).
pub fn qemu_nbd(image: &Path, export: &str, listen: Listen, read_only: bool, log: &Path) -> Proc {
    qemu_nbd_with(image, export, listen, read_only, &[], log)
}

/// [`qemu_nbd`] with extra command line options.
pub fn qemu_nbd_with(
    image: &Path,
    export: &str,
    listen: Listen,
    read_only: bool,
    extra: &[&str],
    log: &Path,
) -> Proc {
    require("qemu-nbd", "qemu-utils");
    let mut c = Command::new("qemu-nbd");
    c.args(["-f", "raw", "-x", export, "--persistent", "--shared=8"]);
    c.args(extra);
    match &listen {
        Listen::Unix(p) => {
            c.arg("-k").arg(p);
        }
        Listen::Tcp(port) => {
            c.args(["-b", "127.0.0.1", "-p", &port.to_string()]);
        }
    }
    if read_only {
        c.arg("--read-only");
    }
    c.arg(image);
    let mut p = spawn(c, "qemu-nbd", log);
    match listen {
        Listen::Unix(path) => wait_unix(path, &mut p),
        Listen::Tcp(port) => {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(p.is_running(), "qemu-nbd exited early");
                assert!(
                    Instant::now() < deadline,
                    "qemu-nbd did not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    p
}

/// `nbdkit -f -U SOCK PLUGIN ARGS...`
pub fn nbdkit(sock: &Path, plugin_args: &[&str], log: &Path) -> Proc {
    require("nbdkit", "nbdkit");
    let mut c = Command::new("nbdkit");
    c.arg("-f").arg("-U").arg(sock).args(plugin_args);
    let mut p = spawn(c, "nbdkit", log);
    wait_unix(sock, &mut p);
    p
}

pub fn spawn(mut c: Command, name: &str, log: &Path) -> Proc {
    let out = File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = c
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Proc {
        child,
        name: name.into(),
        log: Some(log.to_path_buf()),
    }
}

/// Starts the `vhost-blk-remote` binary and waits until it listens on `socket`.
pub fn backend(socket: &Path, nbd_uri: &str, extra: &[&str], log: &Path) -> Proc {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vhost-blk-remote"));
    c.arg("--socket")
        .arg(socket)
        .arg("--nbd")
        .arg(nbd_uri)
        .args(extra)
        .env("RUST_LOG", "debug");
    let mut p = spawn(c, "vhost-blk-remote", log);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !socket.exists() {
        assert!(p.is_running(), "vhost-blk-remote exited early");
        assert!(Instant::now() < deadline, "vhost-blk-remote did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// Waits until the log file `log` contains `what`.
#[track_caller]
pub fn wait_for_log(log: &Path, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !fs::read_to_string(log).unwrap_or_default().contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} in {}:\n{}",
            log.display(),
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn unix_uri(export: &str, sock: &Path) -> String {
    format!("nbd+unix:///{export}?socket={}", sock.display())
}

/// Compares byte buffers without printing kilobytes on failure.
#[track_caller]
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i}: got {:#x}, want {:#x}",
            got[i], want[i]
        );
    }
}
