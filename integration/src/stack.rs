//! The product's processes, started the way a user would start them, inside the topology:
//! an NBD server in `storage`; vhost-net-ft, a block backend and the vmm with the `kv` guest
//! in a host namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::metrics::Component;
use crate::netns::{connect_from, exec_prefix, NetnsError};
use crate::proc::{Proc, ProcError};
use crate::repo_path;
use crate::resp;
use crate::topology::{Topology, CLIENT_IP, GUEST_IP, GUEST_MAC, STORAGE_IP, TAP};

pub const NBD_PORT: u16 = 10809;
pub const EXPORT: &str = "disk";
pub const DISK_MIB: u64 = 64;
pub const KV_PORT: u16 = 6379;
/// How long a guest may take to print `guest: kv ready` (it replays its disk log first).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// A topology, a private temp directory for sockets, disks and logs, and the client side.
pub struct Lab {
    pub dir: tempfile::TempDir,
    // Dropped last: processes (owned by the caller) die before the namespaces go.
    pub topo: Topology,
}

impl Lab {
    pub fn new(hosts: &[&str]) -> Result<Self, StackError> {
        crate::require_environment();
        let dir = tempfile::Builder::new().prefix("ftvm-e2e-").tempdir()?;
        Ok(Lab {
            topo: Topology::new(hosts)?,
            dir,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a client program (e.g. redis-cli) inside the `client` namespace.
    pub fn client_cmd(&self, argv: &[&str]) -> Result<Output, StackError> {
        let mut full = exec_prefix(&self.topo.ns("client"));
        full.extend(argv.iter().map(|s| s.to_string()));
        Ok(Command::new(&full[0])
            .args(&full[1..])
            .stdin(Stdio::null())
            .output()?)
    }

    /// `redis-cli -h GUEST_IP ARGS...` from the client namespace; returns trimmed stdout.
    pub fn redis_cli(&self, args: &[&str]) -> Result<String, StackError> {
        let mut argv = vec!["redis-cli", "-h", GUEST_IP, "-p", "6379"];
        argv.extend_from_slice(args);
        let out = self.client_cmd(&argv)?;
        if !out.status.success() {
            return Err(StackError::Other(format!(
                "redis-cli {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs `redis-benchmark ARGS... --csv` against the guest from the client namespace and
    /// returns one row per test. Panics if it fails: it is used by benchmarks only.
    pub fn redis_benchmark(&self, args: &[&str]) -> Vec<BenchRow> {
        let mut argv = vec!["redis-benchmark", "-h", GUEST_IP];
        argv.extend_from_slice(args);
        argv.push("--csv");
        let out = self.client_cmd(&argv).expect("redis-benchmark");
        let csv = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "redis-benchmark failed: {csv}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
        // "p99_latency_ms","max_latency_ms"
        csv.lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').map(|s| s.trim_matches('"')).collect();
                Some(BenchRow {
                    test: f.first()?.to_string(),
                    rps: f.get(1)?.parse().ok()?,
                    p50_ms: f.get(4)?.parse().ok()?,
                    p99_ms: f.get(6)?.parse().ok()?,
                })
            })
            .collect()
    }

    /// A RESP connection to the guest from the client namespace.
    pub fn connect(&self) -> Result<resp::Client, StackError> {
        let addr = format!("{GUEST_IP}:{KV_PORT}")
            .parse()
            .map_err(|e| StackError::Other(format!("{e}")))?;
        let stream = connect_from(&self.topo.ns("client"), addr, Duration::from_secs(5))?;
        resp::Client::new(stream, Duration::from_secs(20))
            .map_err(|e| StackError::Other(e.to_string()))
    }

    /// Creates an all-zero raw disk image (a fresh disk: the guest formats it).
    pub fn create_disk(&self, name: &str) -> Result<PathBuf, StackError> {
        let path = self.path(name);
        let f = std::fs::File::create(&path)?;
        f.set_len(DISK_MIB << 20)?;
        Ok(path)
    }
}

/// One line of `redis-benchmark --csv`.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub test: String,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Which NBD server the storage namespace runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NbdServer {
    QemuNbd,
    Nbdkit,
}

pub struct Storage {
    pub proc: Proc,
    kind: NbdServer,
    disk: PathBuf,
    ns: String,
    dir: PathBuf,
}

impl Storage {
    pub fn start(lab: &Lab, kind: NbdServer, disk: &Path) -> Result<Self, StackError> {
        let mut s = Storage {
            proc: Self::spawn(lab.dir.path(), &lab.topo.ns("storage"), kind, disk)?,
            kind,
            disk: disk.to_path_buf(),
            ns: lab.topo.ns("storage"),
            dir: lab.dir.path().to_path_buf(),
        };
        s.wait_listening()?;
        Ok(s)
    }

    fn spawn(dir: &Path, ns: &str, kind: NbdServer, disk: &Path) -> Result<Proc, StackError> {
        let disk = disk.display().to_string();
        let port = NBD_PORT.to_string();
        let argv: Vec<String> = match kind {
            // -t: keep serving after a client disconnects; --shared: several clients at once.
            NbdServer::QemuNbd => [
                "qemu-nbd",
                "-f",
                "raw",
                "-x",
                EXPORT,
                "-b",
                STORAGE_IP,
                "-p",
                &port,
                "-t",
                "--shared=8",
                "--cache=none",
                &disk,
            ]
            .map(String::from)
            .to_vec(),
            NbdServer::Nbdkit => [
                "nbdkit", "-f", "-i", STORAGE_IP, "-p", &port, "-e", EXPORT, "file", &disk,
            ]
            .map(String::from)
            .to_vec(),
        };
        let name = match kind {
            NbdServer::QemuNbd => "qemu-nbd",
            NbdServer::Nbdkit => "nbdkit",
        };
        Ok(Proc::spawn(name, dir, Some(ns), &argv)?)
    }

    fn wait_listening(&mut self) -> Result<(), StackError> {
        let addr = format!("{STORAGE_IP}:{NBD_PORT}")
            .parse()
            .map_err(|e| StackError::Other(format!("{e}")))?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if connect_from(&self.ns, addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.proc.try_status() {
                return Err(StackError::Other(format!(
                    "NBD server exited ({status}): {}",
                    self.proc.output()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(StackError::Other(format!(
            "NBD server not listening: {}",
            self.proc.output()
        )))
    }

    pub fn uri() -> String {
        format!("nbd://{STORAGE_IP}:{NBD_PORT}/{EXPORT}")
    }

    /// Kills the server (SIGKILL) and starts it again on the same disk.
    pub fn restart(&mut self, downtime: Duration) -> Result<(), StackError> {
        self.proc.kill();
        std::thread::sleep(downtime);
        self.proc = Self::spawn(&self.dir, &self.ns, self.kind, &self.disk)?;
        self.wait_listening()
    }
}

/// The block backend a host uses.
#[derive(Clone, Debug)]
pub enum BlockBackend {
    /// Our vhost-blk-remote on this NBD URI.
    Remote(String),
    /// qemu-storage-daemon exporting this raw image as vhost-user-blk (a third-party backend).
    QemuStorageDaemon(PathBuf),
}

/// The logging-channel port of an FT backup.
pub const FT_PORT: u16 = 7000;

/// How a host's vmm runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FtMode {
    Off,
    /// `--ft primary --peer PEER_IP:FT_PORT`.
    Primary {
        peer_ip: String,
        opts: FtOpts,
    },
    /// `--ft backup --listen OWN_IP:PORT --peer PEER_IP:FT_PORT` (the peer: where to look
    /// for a new backup after going live).
    Backup {
        own_ip: String,
        port: u16,
        peer_ip: String,
        opts: FtOpts,
    },
}

impl FtMode {
    pub fn opts(&self) -> Option<&FtOpts> {
        match self {
            FtMode::Off => None,
            FtMode::Primary { opts, .. } | FtMode::Backup { opts, .. } => Some(opts),
        }
    }
}

/// Failover settings shared by both sides of a pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FtOpts {
    /// `--arbiter HOST:PORT`.
    pub arbiter: String,
    /// `--ft-timeout-ms`; None = the vmm's default.
    pub timeout_ms: Option<u64>,
    /// `--mem-mib`; None = 64.
    pub mem_mib: Option<u64>,
    /// Mutual TLS on the logging channel (`--ft-tls-dir`, certificates of `test_ca()`),
    /// or `--ft-insecure`.
    pub tls: bool,
}

/// The throwaway CA of this test process: every FT host's certificates come from it.
pub fn test_ca() -> &'static ft_tls::ca::ThrowawayCa {
    static CA: std::sync::OnceLock<ft_tls::ca::ThrowawayCa> = std::sync::OnceLock::new();
    CA.get_or_init(|| ft_tls::ca::ThrowawayCa::new("ft test CA").expect("a throwaway CA"))
}

/// Writes `role`'s certificate directory under `dir`: the role's name and its logging-link
/// address, which is what the peer checks (no `--ft-peer-name`).
pub fn write_tls_dir(dir: &Path, role: &str, own_ip: &str) -> Result<PathBuf, StackError> {
    let tls = dir.join(format!("{role}-tls"));
    let ip = own_ip
        .parse()
        .map_err(|e| StackError::Other(format!("{own_ip}: {e}")))?;
    test_ca()
        .write_node(&tls, role, &[ip])
        .map_err(|e| StackError::Other(e.to_string()))?;
    Ok(tls)
}

/// One host: its backends and its vmm.
pub struct Host {
    pub role: String,
    pub net: Proc,
    pub blk: Proc,
    pub vmm: Proc,
    backend: BlockBackend,
    ns: String,
    dir: PathBuf,
    ft: FtMode,
    pub extra_cmdline: String,
}

fn bin(name: &str) -> String {
    repo_path(&format!("target/release/{name}"))
        .display()
        .to_string()
}

/// Waits until a Unix socket file exists (the backend is listening).
fn wait_socket(path: &Path, proc: &mut Proc) -> Result<(), StackError> {
    let start = Instant::now();
    while !path.exists() {
        if let Some(status) = proc.try_status() {
            return Err(StackError::Other(format!(
                "{} exited ({status}): {}",
                proc.name,
                proc.output()
            )));
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(StackError::Other(format!(
                "{} never created {}: {}",
                proc.name,
                path.display(),
                proc.output()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Host {
    pub fn start(lab: &Lab, role: &str, backend: BlockBackend) -> Result<Self, StackError> {
        Self::start_with(lab, role, backend, FtMode::Off, "")
    }

    /// Starts the backends and the vmm; waits for `guest: kv ready` (a primary or plain vmm)
    /// or for the backup's `replaying` (a backup; it waits for its primary first).
    pub fn start_with(
        lab: &Lab,
        role: &str,
        backend: BlockBackend,
        ft: FtMode,
        extra_cmdline: &str,
    ) -> Result<Self, StackError> {
        let ns = lab.topo.ns(role);
        let dir = lab.dir.path().to_path_buf();
        let net_sock = dir.join(format!("{role}-net.sock"));
        // Sockets left behind by killed processes of an earlier host in this role.
        for name in ["net", "net-ft", "blk", "blk-ft"] {
            let _ = std::fs::remove_file(dir.join(format!("{role}-{name}.sock")));
        }
        let mut net = Self::spawn_net(&dir, &ns, role)?;
        wait_socket(&net_sock, &mut net)?;
        let mut blk = Self::spawn_blk(&dir, &ns, role, &backend)?;
        wait_socket(&Self::blk_socket(&dir, role), &mut blk)?;
        let vmm = Self::spawn_vmm(&dir, &ns, role, &ft, extra_cmdline)?;
        let mut host = Host {
            role: role.into(),
            net,
            blk,
            vmm,
            backend,
            ns,
            dir,
            ft,
            extra_cmdline: extra_cmdline.into(),
        };
        if !matches!(host.ft, FtMode::Backup { .. }) {
            host.wait_ready(0)?;
        }
        Ok(host)
    }

    fn spawn_net(dir: &Path, ns: &str, role: &str) -> Result<Proc, StackError> {
        let sock = dir.join(format!("{role}-net.sock"));
        let ft = dir.join(format!("{role}-net-ft.sock"));
        let argv = [
            bin("vhost-net-ft"),
            "--socket".into(),
            sock.display().to_string(),
            "--tap".into(),
            TAP.into(),
            "--mac".into(),
            GUEST_MAC.into(),
            "--ft-socket".into(),
            ft.display().to_string(),
            "--metrics-listen".into(),
            Component::Net.listen(),
        ];
        Ok(Proc::spawn(
            &format!("{role}-vhost-net-ft"),
            dir,
            Some(ns),
            &argv,
        )?)
    }

    /// Kills vhost-net-ft (SIGKILL) and starts it again after `downtime`.
    pub fn restart_net(&mut self, downtime: Duration) -> Result<(), StackError> {
        self.net.kill();
        let sock = self.dir.join(format!("{}-net.sock", self.role));
        let _ = std::fs::remove_file(&sock);
        std::thread::sleep(downtime);
        self.net = Self::spawn_net(&self.dir, &self.ns, &self.role)?;
        wait_socket(&sock, &mut self.net)
    }

    pub fn api_socket(dir: &Path, role: &str) -> PathBuf {
        dir.join(format!("{role}-api.sock"))
    }

    /// This host's vmm control socket (`--api-sock`), e.g. for `ftctl`.
    pub fn api_sock(&self) -> PathBuf {
        Self::api_socket(&self.dir, &self.role)
    }

    /// `ftctl --api-sock <this vmm's> ARGS`: (exit status, stdout, stderr).
    pub fn ftctl(&self, args: &[&str]) -> Result<(bool, String, String), StackError> {
        let out = Command::new(bin("ftctl"))
            .arg("--api-sock")
            .arg(self.api_sock())
            .args(args)
            .output()?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok((out.status.success(), text(&out.stdout), text(&out.stderr)))
    }

    /// `curl http://127.0.0.1:PORT/metrics` of one of this host's processes.
    pub fn scrape(&self, c: Component) -> Result<String, StackError> {
        crate::metrics::scrape(&self.ns, c)
    }

    /// A control-socket connection to this host's vmm.
    pub fn api(&self) -> Result<crate::api::ApiClient, StackError> {
        crate::api::ApiClient::connect(&Self::api_socket(&self.dir, &self.role))
            .map_err(StackError::Io)
    }

    /// The vmm's `status` reply (a new control-socket connection).
    pub fn status(&self) -> Result<vmm_api::Status, StackError> {
        Ok(self.api()?.status()?)
    }

    fn blk_socket(dir: &Path, role: &str) -> PathBuf {
        dir.join(format!("{role}-blk.sock"))
    }

    fn spawn_blk(
        dir: &Path,
        ns: &str,
        role: &str,
        backend: &BlockBackend,
    ) -> Result<Proc, StackError> {
        let sock = Self::blk_socket(dir, role);
        let _ = std::fs::remove_file(&sock);
        let sock = sock.display().to_string();
        let argv: Vec<String> = match backend {
            BlockBackend::Remote(uri) => {
                let ft = dir.join(format!("{role}-blk-ft.sock")).display().to_string();
                vec![bin("vhost-blk-remote"), "--socket".into(), sock, "--nbd".into(), uri.clone(), "--ft-socket".into(), ft, "--metrics-listen".into(), Component::Blk.listen()]
            }
            BlockBackend::QemuStorageDaemon(image) => vec![
                "qemu-storage-daemon".into(),
                "--blockdev".into(),
                format!("driver=file,node-name=file0,filename={},cache.direct=off", image.display()),
                "--blockdev".into(),
                "driver=raw,node-name=disk0,file=file0".into(),
                "--export".into(),
                format!("type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={sock},writable=on"),
            ],
        };
        Ok(Proc::spawn(&format!("{role}-blk"), dir, Some(ns), &argv)?)
    }

    fn spawn_vmm(
        dir: &Path,
        ns: &str,
        role: &str,
        ft: &FtMode,
        extra: &str,
    ) -> Result<Proc, StackError> {
        let net_ft = format!(",ft={}", dir.join(format!("{role}-net-ft.sock")).display());
        let blk_ft = format!(",ft={}", dir.join(format!("{role}-blk-ft.sock")).display());
        let (net_ft, blk_ft) = if *ft == FtMode::Off {
            (String::new(), String::new())
        } else {
            (net_ft, blk_ft)
        };
        let mut argv = vec![
            bin("vmm"),
            "--kernel".into(),
            repo_path("build/guest.elf").display().to_string(),
            "--mem-mib".into(),
            ft.opts().and_then(|o| o.mem_mib).unwrap_or(64).to_string(),
            "--cmdline".into(),
            format!("guest.mode=kv guest.ip={GUEST_IP}/24 {extra}"),
            "--net".into(),
            format!(
                "socket={},mac={GUEST_MAC}{net_ft}",
                dir.join(format!("{role}-net.sock")).display()
            ),
            "--block".into(),
            format!("socket={}{blk_ft}", Self::blk_socket(dir, role).display()),
            "--api-sock".into(),
            Self::api_socket(dir, role).display().to_string(),
            "--metrics-listen".into(),
            Component::Vmm.listen(),
            "--stats".into(),
        ];
        let opts = match ft {
            FtMode::Off => None,
            FtMode::Primary { peer_ip, opts } => {
                argv.extend([
                    "--ft".into(),
                    "primary".into(),
                    "--peer".into(),
                    format!("{peer_ip}:{FT_PORT}"),
                ]);
                Some(opts)
            }
            FtMode::Backup {
                own_ip,
                port,
                peer_ip,
                opts,
            } => {
                argv.extend([
                    "--ft".into(),
                    "backup".into(),
                    "--listen".into(),
                    format!("{own_ip}:{port}"),
                    "--peer".into(),
                    format!("{peer_ip}:{FT_PORT}"),
                ]);
                Some(opts)
            }
        };
        if let Some(opts) = opts {
            let own_ip = match ft {
                FtMode::Backup { own_ip, .. } => own_ip.clone(),
                FtMode::Primary { peer_ip, .. } => crate::topology::other_ft_ip(peer_ip),
                FtMode::Off => String::new(),
            };
            if opts.tls {
                let tls = write_tls_dir(dir, role, &own_ip)?;
                argv.extend(["--ft-tls-dir".into(), tls.display().to_string()]);
            } else {
                argv.push("--ft-insecure".into());
            }
            argv.extend([
                "--arbiter".into(),
                opts.arbiter.clone(),
                "--node".into(),
                role.into(),
            ]);
            if let Some(ms) = opts.timeout_ms {
                argv.extend(["--ft-timeout-ms".into(), ms.to_string()]);
            }
        }
        Ok(Proc::spawn(&format!("{role}-vmm"), dir, Some(ns), &argv)?)
    }

    /// Waits for the guest's `guest: kv ready` line printed after byte `from` of the vmm log.
    pub fn wait_ready(&mut self, from: usize) -> Result<(), StackError> {
        Ok(self.vmm.wait_for("guest: kv ready", from, BOOT_TIMEOUT)?)
    }

    /// Kills the vmm (SIGKILL) and boots the guest again on the same disk and backends.
    pub fn restart_vmm(&mut self) -> Result<(), StackError> {
        self.vmm.kill();
        self.vmm = Self::spawn_vmm(
            &self.dir,
            &self.ns,
            &self.role,
            &self.ft,
            &self.extra_cmdline,
        )?;
        self.wait_ready(0)
    }

    /// Kills the block backend (SIGKILL) and starts it again after `downtime`.
    pub fn restart_blk(&mut self, downtime: Duration) -> Result<(), StackError> {
        self.blk.kill();
        std::thread::sleep(downtime);
        self.blk = Self::spawn_blk(&self.dir, &self.ns, &self.role, &self.backend)?;
        wait_socket(&Self::blk_socket(&self.dir, &self.role), &mut self.blk)
    }
}

/// The arbiter, in the storage namespace (reachable from both hosts over the switch, not
/// over the logging link), with its state in the lab directory.
pub struct Arbiter {
    pub proc: Proc,
    ns: String,
    dir: PathBuf,
    /// `--tls-dir` (certificates of `test_ca()` for STORAGE_IP), or None: `--insecure`.
    tls: Option<PathBuf>,
}

pub const ARBITER_PORT: u16 = 7700;

impl Arbiter {
    /// `tls`: mutual TLS, as the pair's VMMs use it with `--ft-tls-dir`.
    pub fn start(lab: &Lab, tls: bool) -> Result<Self, StackError> {
        let dir = lab.dir.path().to_path_buf();
        std::fs::create_dir_all(dir.join("arbiter-state"))?;
        let ns = lab.topo.ns("storage");
        let tls = match tls {
            true => Some(write_tls_dir(&dir, "arbiter", STORAGE_IP)?),
            false => None,
        };
        // A fresh lab: `--init` creates the state file (a missing one is refused otherwise).
        let proc = Self::spawn(&dir, &ns, true, tls.as_deref())?;
        let mut a = Arbiter { proc, ns, dir, tls };
        a.wait_listening()?;
        Ok(a)
    }

    fn spawn(dir: &Path, ns: &str, init: bool, tls: Option<&Path>) -> Result<Proc, StackError> {
        let mut argv = vec![
            bin("arbiter"),
            "serve".into(),
            "--listen".into(),
            Self::addr(),
            "--state".into(),
            dir.join("arbiter-state").display().to_string(),
        ];
        if init {
            argv.push("--init".into());
        }
        match tls {
            Some(d) => argv.extend(["--tls-dir".into(), d.display().to_string()]),
            None => argv.push("--insecure".into()),
        }
        Ok(Proc::spawn("arbiter", dir, Some(ns), &argv)?)
    }

    fn wait_listening(&mut self) -> Result<(), StackError> {
        Ok(self
            .proc
            .wait_for("listening on", 0, Duration::from_secs(10))?)
    }

    /// HOST:PORT for `--arbiter`.
    pub fn addr() -> String {
        format!("{STORAGE_IP}:{ARBITER_PORT}")
    }

    /// SIGKILL (the arbiter is down until `restart`).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts it again on the same state directory (without `--init`: the flags it granted
    /// before must still stand).
    pub fn restart(&mut self) -> Result<(), StackError> {
        self.proc.kill();
        self.proc = Self::spawn(&self.dir, &self.ns, false, self.tls.as_deref())?;
        self.wait_listening()
    }

    /// `arbiter status` on the state directory: one line per decided flag.
    pub fn status(&self) -> Result<String, StackError> {
        let out = Command::new(bin("arbiter"))
            .args(["status", "--state"])
            .arg(self.dir.join("arbiter-state"))
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The client's address, for messages.
pub fn client_ip() -> &'static str {
    CLIENT_IP
}
