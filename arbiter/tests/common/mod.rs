//! The real `arbiter` binary for integration tests, on loopback with ephemeral ports.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use arbiter::client::Client;

pub const BIN: &str = env!("CARGO_BIN_EXE_arbiter");
pub const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));

/// A running `arbiter serve`; killed (SIGKILL, by PID) and reaped on drop. Its log (stderr)
/// goes to `log_path`.
pub struct Arbiter {
    child: Child,
    pub addr: String,
    log_path: PathBuf,
}

impl Arbiter {
    /// First start on an empty DIR: `serve --init --insecure`.
    pub fn init(state: &Path) -> Arbiter {
        Self::spawn(state, true, None)
    }

    /// A start on DIR that holds a state file (a restart), in clear TCP.
    pub fn start(state: &Path) -> Arbiter {
        Self::spawn(state, false, None)
    }

    /// First start on an empty DIR, with mutual TLS: `serve --init --tls-dir TLS`.
    pub fn init_tls(state: &Path, tls: &Path) -> Arbiter {
        Self::spawn(state, true, Some(tls))
    }

    fn spawn(state: &Path, init: bool, tls: Option<&Path>) -> Arbiter {
        // Beside DIR (in the test's temporary directory, see `state_dir`), not in it: the
        // tests look at what is in DIR.
        let log_path = state.with_extension("log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open log");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--state"])
            .arg(state);
        if init {
            cmd.arg("--init");
        }
        match tls {
            Some(dir) => cmd.arg("--tls-dir").arg(dir),
            None => cmd.arg("--insecure"),
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
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
                panic!(
                    "arbiter did not start: {line:?}; log: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
        };
        Arbiter {
            child,
            addr,
            log_path,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addr, TIMEOUT).expect("connect")
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr.parse().expect("addr")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Panics if the process has exited.
    pub fn assert_alive(&mut self) {
        let exited = self.child.try_wait().expect("try_wait");
        assert!(
            exited.is_none(),
            "arbiter exited: {exited:?}; log: {}",
            self.log()
        );
    }

    /// Resident memory, from /proc/PID/status.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// kill -9, as a crash.
    pub fn kill9(mut self) {
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

/// A temporary directory holding an empty state directory `state` (the log goes beside it).
pub fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let state = t.path().join("state");
    std::fs::create_dir(&state).expect("mkdir state");
    (t, state)
}

/// Runs the arbiter binary with `args` and DIR appended.
pub fn run(args: &[&str], state: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg(state)
        .output()
        .expect("run arbiter")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn status_cli(state: &Path) -> String {
    let out = run(&["status", "--state"], state);
    assert!(out.status.success(), "status failed: {}", stderr(&out));
    String::from_utf8(out.stdout).expect("utf8")
}

/// Milliseconds since 1970, as the VMM's `next_epoch` picks an epoch.
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("clock after 1970").as_millis() as u64
}

/// A TCP connection to `dst` from the local address `src` (any 127.x.y.z works on
/// loopback), so that a test can play many client addresses. std cannot bind before
/// connecting, hence libc.
pub fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(dst) = dst else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a plain socket(2); the fd is owned by the TcpStream built below or closed.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns; the stream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let local = sockaddr(src, 0);
    let remote = sockaddr(*dst.ip(), dst.port());
    // SAFETY: bind and connect read a sockaddr_in of `len` bytes, which these are.
    let rc = unsafe { libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

/// Whether the server still holds `s` open: nothing to read yet (a closed one has EOF, a
/// reset, or its closing error line waiting).
pub fn still_open(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    let open = matches!(
        std::io::Read::read(&mut &*s, &mut b),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    );
    s.set_nonblocking(false).expect("blocking");
    open
}

/// Raises this process's soft open-file limit (the tests hold thousands of sockets).
pub fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write one rlimit struct, which `lim` is.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur >= want,
        "RLIMIT_NOFILE hard limit {} < {want}",
        lim.rlim_max
    );
}
