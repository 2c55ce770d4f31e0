//! `vhost-blk-remote --socket PATH --nbd URI [--readonly] [--ft-socket PATH]
//! [--socket-group GROUP] [--metrics-listen ADDR:PORT]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ft_control::local::parse_group;
use metrics_http::MetricsListener;
use vhost_blk_remote::blk::BackendOptions;
use vhost_blk_remote::daemon::{serve, DaemonConfig};
use vhost_blk_remote::metrics::METRICS;
use vhost_blk_remote::nbd::{Client, ClientOptions, NbdError, NbdUri};

/// vhost-user block device backend whose storage is a remote NBD export.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Unix socket to listen on for the vhost-user frontend (the VMM).
    #[arg(long)]
    socket: PathBuf,
    /// NBD export: nbd://host[:port][/export] or nbd+unix:///export?socket=PATH
    #[arg(long)]
    nbd: String,
    /// Expose the disk read-only (also implied by a read-only export).
    #[arg(long)]
    readonly: bool,
    /// Serial returned by VIRTIO_BLK_T_GET_ID (at most 20 bytes; default: the export name).
    #[arg(long)]
    serial: Option<String>,
    /// Seconds to keep retrying the first NBD connection while the server is unreachable.
    #[arg(long, default_value_t = 30)]
    connect_timeout: u64,
    /// Seconds GET_VRING_BASE waits for in-flight requests before rewinding the ring.
    #[arg(long, default_value_t = 5)]
    drain_timeout: u64,
    /// Unix socket for the VMM's FT control channel (fault-tolerant mode); without it the
    /// backend is a plain vhost-user backend.
    #[arg(long)]
    ft_socket: Option<PathBuf>,
    /// Group (name or gid) that may also connect to the sockets: they are created mode 0660
    /// with this group instead of 0600, and a peer whose gid is this group is accepted.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (docs/PROTOCOL.md, "Metrics").
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
}

fn connect(uri: &NbdUri, timeout: Duration) -> Result<Client, NbdError> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        match Client::connect(uri, ClientOptions::default()) {
            Ok(c) => return Ok(c),
            Err(e) if e.is_transient() && Instant::now() + delay < deadline => {
                log::warn!("cannot reach {uri} yet: {e}; retrying in {delay:?}");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let uri = match NbdUri::parse(&cli.nbd) {
        Ok(u) => u,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let socket_group = match cli.socket_group.as_deref().map(parse_group).transpose() {
        Ok(g) => g,
        Err(e) => {
            log::error!("--socket-group: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(addr) = cli.metrics_listen {
        let spawned =
            MetricsListener::bind(addr).and_then(|l| l.spawn(&METRICS.registry, || {}, || {}));
        if let Err(e) = spawned {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    }
    let client = match connect(&uri, Duration::from_secs(cli.connect_timeout)) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            log::error!("cannot connect to {uri}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serial = cli.serial.unwrap_or_else(|| match uri.export.as_str() {
        "" => "vhost-blk-remote".into(),
        e => e.into(),
    });
    let cfg = DaemonConfig {
        socket: cli.socket,
        read_only: cli.readonly,
        serial,
        backend: BackendOptions {
            drain_timeout: Duration::from_secs(cli.drain_timeout),
        },
        ft_socket: cli.ft_socket,
        socket_group,
    };
    match serve(client, &cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
