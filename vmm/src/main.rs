//! `vmm`: boots a guest kernel with a serial console. Exit status (docs/GUEST-ABI.md):
//! 0 guest powered off, 1 VMM error, 2 usage, 3 triple fault, 4 KVM internal error,
//! 5 guest-reported failure, 6 guest halted with interrupts disabled, 7 FT backup diverged,
//! 8 FT backup lost its primary before it could take over, 9 lost the arbiter's
//! test-and-set (the other side of the FT pair is live; this one halts), 31 a thread made a
//! system call its seccomp filter does not allow (the line on stderr names it).
//! `vmm --snapshot-info FILE` prints a snapshot file's summary instead (0, or 1 if refused).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ft_tls::{PeerName, TlsDir};
use vmm::config::{
    BlockConfig, FailoverConfig, FtConfig, NetConfig, SerialOutput, VmmConfig, DEFAULT_CMDLINE,
    DEFAULT_FT_TIMEOUT_MS, DEFAULT_JOIN_PAUSE_MS, DEFAULT_MEM_MIB, DEFAULT_VM_ID,
};
use vmm::ft::link::LinkSecurity;
use vmm::vstate::vcpu::VmExit;
use vmm::Vmm;

#[derive(Parser, Debug)]
#[command(
    name = "vmm",
    version,
    about = "Boot a guest kernel on KVM with deterministic exits"
)]
struct Cli {
    /// Guest kernel: an x86_64 ELF (vmlinux, build/guest.elf) or a bzImage.
    #[arg(long, required_unless_present = "snapshot_info")]
    kernel: Option<PathBuf>,
    /// Instead of booting: verify the snapshot file FILE (written by the control socket's
    /// `snapshot`) and print its landmark, signature hash, devices and RAM digest as JSON.
    #[arg(long, value_name = "FILE", exclusive = true)]
    snapshot_info: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    cmdline: String,
    /// Guest memory in MiB (a multiple of 2).
    #[arg(long, default_value_t = DEFAULT_MEM_MIB)]
    mem_mib: u64,
    /// Serial console: `stdout` or `file:PATH`.
    #[arg(long, default_value = "stdout")]
    serial: SerialOutput,
    /// A virtio-net device served by the vhost-user backend at PATH; MAC goes to config space.
    #[arg(long, value_name = "socket=PATH[,mac=MAC]")]
    net: Option<NetConfig>,
    /// A virtio-blk device served by the vhost-user backend at PATH.
    #[arg(long, value_name = "socket=PATH")]
    block: Option<BlockConfig>,
    /// Control socket: JSON lines (status, pause [at landmark N], resume, digest, snapshot,
    /// protect; docs/PROTOCOL.md).
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// The control socket is mode 0660 with this group, whose members may control the VM
    /// too (default: mode 0600, the VMM's user only).
    #[arg(long, value_name = "GROUP", requires = "api_sock", value_parser = parse_socket_group)]
    socket_group: Option<u32>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (docs/PROTOCOL.md, "Metrics").
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Fault tolerance: `primary` (needs --peer) or `backup` (needs --listen).
    #[arg(long, value_parser = ["primary", "backup"])]
    ft: Option<String>,
    /// FT primary: the backup's logging-channel address (HOST:PORT). FT backup (optional):
    /// where to look for a new backup after going live (re-protection).
    #[arg(long, value_name = "HOST:PORT", requires = "ft")]
    peer: Option<std::net::SocketAddr>,
    /// FT backup: where to wait for the primary (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT", requires = "ft")]
    listen: Option<std::net::SocketAddr>,
    /// FT: the arbiter asked before either side of the pair goes on alone: the built-in
    /// `arbiter serve` at HOST:PORT, or an etcd cluster, etcd://HOST:PORT[,HOST:PORT...]
    /// (its v3 JSON gateway; keys under /ftvm/arbiter/).
    #[arg(long, value_name = "HOST:PORT|etcd://HOST:PORT,...", requires = "ft")]
    arbiter: Option<String>,
    /// FT: the VM's name at the arbiter; the same for its primary and backup.
    #[arg(long, default_value = DEFAULT_VM_ID, requires = "ft")]
    vm_id: String,
    /// FT: this VMM's name at the arbiter [default: vmm-PID].
    #[arg(long, requires = "ft")]
    node: Option<String>,
    /// FT: the peer is declared lost after this long without a message from it.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_FT_TIMEOUT_MS, requires = "ft")]
    ft_timeout_ms: u64,
    /// FT: a joining backup receives memory while the guest runs (pre-copy), in rounds of the
    /// pages dirtied meanwhile, until the rest fits in a guest pause of about this long.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_JOIN_PAUSE_MS, requires = "ft")]
    ft_join_pause_ms: u64,
    /// Print exit and interrupt statistics to stderr when the guest stops.
    #[arg(long)]
    stats: bool,
    /// Run without the per-thread seccomp filters (for debugging; logs a warning).
    #[arg(long)]
    no_seccomp: bool,
    /// FT: mutual TLS 1.3 on the logging channel, with the certificates in DIR (QEMU's
    /// tls-creds-x509 names: ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem,
    /// client-key.pem).
    #[arg(
        long,
        value_name = "DIR",
        requires = "ft",
        conflicts_with = "ft_insecure"
    )]
    ft_tls_dir: Option<std::path::PathBuf>,
    /// FT: the name the peer's certificate must carry (default: the peer's IP address).
    #[arg(long, value_name = "NAME", requires = "ft_tls_dir")]
    ft_peer_name: Option<String>,
    /// FT: the name the arbiter's certificate must carry (default: the host of --arbiter).
    /// With --ft-tls-dir the arbiter is asked over mutual TLS, and grants a flag only to a
    /// name in this VMM's client certificate: --node must be one of them.
    #[arg(long, value_name = "NAME", requires = "ft_tls_dir")]
    arbiter_name: Option<String>,
    /// FT: run the logging channel and the arbiter's exchange in clear TCP, unauthenticated
    /// (for tests and benchmarks; the arbiter must then be started with --insecure).
    #[arg(long, requires = "ft")]
    ft_insecure: bool,
}

/// `--ft-tls-dir`/`--ft-peer-name`/`--ft-insecure`, loaded before any thread starts.
fn link_security(
    tls_dir: Option<&std::path::Path>,
    peer_name: Option<&str>,
    insecure: bool,
    ft: &FtConfig,
) -> Result<LinkSecurity, String> {
    if *ft == FtConfig::Off {
        return Ok(LinkSecurity::Insecure);
    }
    let Some(dir) = tls_dir else {
        if insecure {
            log::warn!("ft: --ft-insecure: the logging channel is clear TCP; anyone who reaches it can read the guest's memory and feed the backup; the arbiter is asked in clear TCP too");
            return Ok(LinkSecurity::Insecure);
        }
        return Err(
            "FT mode needs --ft-tls-dir DIR (mutual TLS on the logging channel and to the arbiter) or --ft-insecure"
                .into(),
        );
    };
    let peer_name = match peer_name {
        Some(n) => Some(PeerName::parse(n).map_err(|e| format!("--ft-peer-name: {e}"))?),
        None => None,
    };
    if let (FtConfig::Backup { peer: None, .. }, None) = (ft, &peer_name) {
        return Err("--ft backup with --ft-tls-dir needs --ft-peer-name NAME or --peer HOST:PORT (whose certificate to accept)".into());
    }
    let loaded = TlsDir::load(dir).map_err(|e| format!("--ft-tls-dir: {e}"))?;
    Ok(LinkSecurity::Tls {
        dir: loaded,
        peer_name,
    })
}

/// `--snapshot-info FILE`: 0 and the summary on stdout, or 1 and why the file is refused.
fn snapshot_info(path: &std::path::Path) -> ExitCode {
    match vmm::persist::file::SnapshotFile::load(path) {
        Ok(snap) => {
            println!("{:#}", snap.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vmm: error: {}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Some(path) = &cli.snapshot_info {
        return snapshot_info(path);
    }
    let Some(kernel) = cli.kernel else {
        eprintln!("vmm: error: --kernel is required");
        return ExitCode::from(2);
    };
    let ft = match (cli.ft.as_deref(), cli.peer, cli.listen) {
        (None, _, _) => FtConfig::Off,
        (Some("primary"), Some(peer), None) => FtConfig::Primary { peer },
        (Some("backup"), peer, Some(listen)) => FtConfig::Backup { listen, peer },
        _ => {
            eprintln!("vmm: error: --ft primary needs --peer HOST:PORT; --ft backup needs --listen HOST:PORT");
            return ExitCode::from(2);
        }
    };
    if ft != FtConfig::Off && cli.arbiter.is_none() {
        eprintln!(
            "vmm: error: FT mode needs --arbiter HOST:PORT (who may go on alone after a failure)"
        );
        return ExitCode::from(2);
    }
    // A malformed etcd URL is a startup error, not a failover that can never decide.
    if let Some(url) = cli.arbiter.as_deref().filter(|a| a.starts_with("etcd://")) {
        if let Err(e) = arbiter::etcd::EtcdCluster::parse(url, vmm::ft::etcd_ask::ATTEMPT_TIMEOUT) {
            eprintln!("vmm: error: --arbiter: {e}");
            return ExitCode::from(2);
        }
    }
    let security = match link_security(
        cli.ft_tls_dir.as_deref(),
        cli.ft_peer_name.as_deref(),
        cli.ft_insecure,
        &ft,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vmm: error: {e}");
            return ExitCode::from(2);
        }
    };
    let arbiter_name = match cli.arbiter_name.as_deref().map(PeerName::parse) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            eprintln!("vmm: error: --arbiter-name: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failover = FailoverConfig {
        security,
        arbiter_name,
        arbiter: cli.arbiter,
        vm_id: cli.vm_id,
        timeout: std::time::Duration::from_millis(cli.ft_timeout_ms),
        join_pause: std::time::Duration::from_millis(cli.ft_join_pause_ms),
        ..FailoverConfig::default()
    };
    if let Some(node) = cli.node {
        failover.node = node;
    }
    let config = VmmConfig {
        kernel,
        initrd: cli.initrd,
        cmdline: cli.cmdline,
        mem_mib: cli.mem_mib,
        serial: cli.serial,
        net: cli.net,
        block: cli.block,
        api_sock: cli.api_sock,
        socket_group: cli.socket_group,
        metrics_listen: cli.metrics_listen,
        ft,
        failover,
    };
    // Before any thread starts: a filter that cannot be built is a startup error.
    if let Err(e) = vmm::seccomp::init(!cli.no_seccomp) {
        eprintln!("vmm: error: {e}");
        return ExitCode::from(1);
    }
    let result = Vmm::new(&config).and_then(|vmm| vmm.run());
    let (exit, stats) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vmm: error: {e}");
            return ExitCode::from(1);
        }
    };
    if cli.stats {
        eprint!("{stats}");
    }
    match exit {
        VmExit::PowerOff => ExitCode::SUCCESS,
        VmExit::TripleFault { registers } => {
            eprintln!("vmm: guest triple fault (KVM_EXIT_SHUTDOWN): {registers}");
            ExitCode::from(3)
        }
        VmExit::InternalError {
            suberror,
            registers,
        } => {
            eprintln!("vmm: KVM internal error, suberror {suberror} (instruction emulation failed?): {registers}");
            ExitCode::from(4)
        }
        VmExit::GuestFailure(code) => {
            eprintln!("vmm: guest reported failure code {code}");
            ExitCode::from(5)
        }
        VmExit::Diverged { landmark, reason } => {
            eprintln!("vmm: backup diverged at landmark {landmark}: {reason}");
            ExitCode::from(7)
        }
        VmExit::PrimaryLost { landmark } => {
            eprintln!("vmm: the primary is gone (logging channel closed inside landmark {landmark}); backup stopped");
            ExitCode::from(8)
        }
        VmExit::LostArbitration { epoch, owner } => {
            eprintln!("vmm: lost the arbiter's test-and-set for epoch {epoch} to {owner}; halting (the other side is live)");
            ExitCode::from(9)
        }
        VmExit::HaltedForever { registers } => {
            eprintln!(
                "vmm: guest halted with interrupts disabled; nothing can wake it: {registers}"
            );
            ExitCode::from(6)
        }
    }
}

/// `--socket-group`: a group name or number that exists.
fn parse_socket_group(name: &str) -> Result<u32, String> {
    ft_control::local::parse_group(name).map_err(|e| e.to_string())
}
