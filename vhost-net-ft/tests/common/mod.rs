//! Shared test fixtures: a private network namespace, the backend as a child process inside
//! it, and an `AF_PACKET` socket on an interface of that namespace. Everything is torn down
//! by `Drop` guards, also when a test fails.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]
#![allow(dead_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique suffix for names made by this test process.
pub fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A network namespace `vnft-test-<pid>-<n>`, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        let name = format!("vnft-test-{}", unique());
        run(Command::new("ip").args(["netns", "add", &name])).expect("ip netns add (needs root)");
        NetNs { name }
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name, "ip"])
            .args(args))
    }

    /// Runs `f` on a thread that has joined the namespace; sockets and TAP file descriptors
    /// made there belong to it.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).expect("open netns");
            // SAFETY: setns on a valid namespace fd; affects only this (fresh) thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread panicked")
    }

    /// Whether interface `name` exists in the namespace.
    pub fn has_link(&self, name: &str) -> bool {
        let name = name.to_string();
        self.run_in(move || vhost_net_ft::tap::interface_exists(&name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("vnft-{}", unique()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The backend running inside a namespace. Killed (by PID) on drop; its log is printed if
/// the test is failing.
pub struct Backend {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Backend {
    /// Starts `vhost-net-ft --socket DIR/vhost.sock --tap TAP --mac MAC` in `ns` and waits
    /// for the socket to appear.
    pub fn start(ns: &NetNs, dir: &Path, tap: &str, mac: &str) -> Backend {
        Backend::start_with(ns, dir, tap, mac, &[])
    }

    /// Like [`Backend::start`], with more command-line arguments. When they include
    /// `--ft-socket PATH`, the caller waits for that socket itself.
    pub fn start_with(
        ns: &NetNs,
        dir: &Path,
        tap: &str,
        mac: &str,
        extra: &[&std::ffi::OsStr],
    ) -> Backend {
        let socket = dir.join(format!("vhost-{tap}.sock"));
        let log = dir.join(format!("backend-{tap}.log"));
        let logf = File::create(&log).expect("log file");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                env!("CARGO_BIN_EXE_vhost-net-ft"),
            ])
            .arg("--socket")
            .arg(&socket)
            .args(["--tap", tap, "--mac", mac])
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn backend");
        let mut b = Backend { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !b.socket.exists() {
            if let Ok(Some(st)) = b.child.try_wait() {
                panic!("backend exited early ({st}):\n{}", b.log_text());
            }
            assert!(Instant::now() < deadline, "no socket:\n{}", b.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        b
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// CPU time (user + system) the process used so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        get(11) + get(12)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `sig` and waits (bounded) for the exit status.
    pub fn signal_and_wait(&mut self, sig: libc::c_int) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(self.pid(), sig) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "backend did not exit on signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- backend log ----\n{}", self.log_text());
        }
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child's PID, which has not been reaped yet.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// A raw `AF_PACKET` socket bound to one interface (create it inside the namespace).
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

/// `ETH_P_ALL` in network byte order, as `socket(2)` and `sockaddr_ll` want it.
fn eth_p_all() -> u16 {
    (libc::ETH_P_ALL as u16).to_be()
}

impl PacketSocket {
    pub fn open(ifname: &str) -> io::Result<PacketSocket> {
        let c = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
        // SAFETY: valid C string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain socket(2) call; result checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(eth_p_all()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero sockaddr_ll is valid; then we fill the fields we need.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = eth_p_all();
        sll.sll_ifindex = ifindex;
        // SAFETY: bind with a valid sockaddr_ll of the size we pass.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends one Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer is valid for `frame.len()` bytes.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast::<libc::c_void>(),
                frame.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for an incoming (not outgoing) frame matching `pred`.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        pred: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            if rc <= 0 {
                continue;
            }
            // SAFETY: zeroed sockaddr_ll is valid; recvfrom writes at most `len` bytes to it.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buffer and address are valid for the sizes passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut sll as *mut libc::sockaddr_ll).cast::<libc::sockaddr>(),
                    &mut len,
                )
            };
            if n <= 0 || sll.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let f = &buf[..n as usize];
            if pred(f) {
                return Some(f.to_vec());
            }
        }
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }
}

/// Local experimental EtherType used by the test frames.
pub const TEST_ETHERTYPE: u16 = 0x88b5;

/// A test frame: `dst`, `src`, EtherType 0x88b5, then `tag` and a patterned payload.
pub fn test_frame(dst: [u8; 6], src: [u8; 6], tag: u32, payload_len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload_len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&tag.to_be_bytes());
    f.extend((0..payload_len).map(|i| (i as u8) ^ (tag as u8)));
    f
}

/// Whether `f` is a test frame with tag `tag`.
pub fn is_test_frame(f: &[u8], tag: u32) -> bool {
    f.len() >= 18 && f[12..14] == TEST_ETHERTYPE.to_be_bytes() && f[14..18] == tag.to_be_bytes()
}

pub const BROADCAST: [u8; 6] = [0xff; 6];
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0x01];
pub const GUEST_MAC_STR: &str = "52:54:00:ab:cd:01";
pub const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
