//! `vhost-net-ft --socket PATH --tap NAME [--mac MAC] [--ft-socket PATH]
//! [--socket-group GROUP] [--metrics-listen ADDR:PORT]`
//!
//! Listens on the vhost-user socket `PATH` and serves one frontend at a time, forever
//! (reconnecting frontends are accepted; a broken one is dropped). With `--ft-socket` it also
//! serves the FT control channel there (one VMM at a time). Logging is configured with
//! `RUST_LOG` (default `info`). `SIGINT`/`SIGTERM` remove the socket files and exit with 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::{io, thread};

use clap::Parser;
use ft_control::local::parse_group;
use log::{error, info};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use ft_backend::FtServer;
use metrics_http::{MetricsError, MetricsListener};
use vhost_net_ft::error::ServeError;
use vhost_net_ft::ft::FtLink;
use vhost_net_ft::net::config::{MacAddr, NetConfig};
use vhost_net_ft::net::metrics::NetMetrics;
use vhost_net_ft::net::stats::NetStats;
use vhost_net_ft::server::Server;
use vhost_net_ft::tap::Tap;
use vhost_user_guard::{FrontendSlot, Guard, GuardOptions};

/// vhost-user virtio-net backend on a TAP device.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// vhost-user socket path to listen on (a stale file is replaced).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// TAP interface (created if it does not exist; a `%d` template is allowed).
    #[arg(long, value_name = "NAME")]
    tap: String,
    /// Guest MAC address reported in the virtio-net configuration space.
    #[arg(long, value_name = "MAC", default_value_t = MacAddr::DEFAULT)]
    mac: MacAddr,
    /// FT control socket to listen on (fault-tolerant mode for a VMM that connects there;
    /// without it, or while no VMM is connected, a plain vhost-user backend).
    #[arg(long, value_name = "PATH")]
    ft_socket: Option<PathBuf>,
    /// Group (name or gid) that may also connect to the sockets: they are created mode 0660
    /// with this group instead of 0600, and a peer whose gid is this group is accepted.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (docs/PROTOCOL.md, "Metrics").
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// The registry `--metrics-listen` serves (it lives as long as the process).
static METRICS: OnceLock<NetMetrics> = OnceLock::new();

/// Starts the `--metrics-listen` endpoint over `stats`.
fn serve_metrics(addr: std::net::SocketAddr, stats: Arc<NetStats>) -> Result<(), MetricsError> {
    let listener = MetricsListener::bind(addr)?;
    let metrics = NetMetrics::new()?;
    let metrics = METRICS.get_or_init(|| metrics);
    let refresh = move || metrics.refresh(&stats);
    listener.spawn(&metrics.registry, || {}, refresh)?;
    Ok(())
}

/// Handles SIGINT and SIGTERM on a dedicated thread (signal-hook's iterator: the handler
/// only wakes that thread, which then does the work outside signal context): remove the
/// sockets, log the counters, exit 0.
fn spawn_signal_thread(sockets: Vec<PathBuf>, stats: Arc<NetStats>) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                info!("signal {sig}: exiting; counters: {}", stats.snapshot());
                for s in &sockets {
                    remove_socket(s);
                }
                std::process::exit(0);
            }
        })?;
    Ok(())
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            error!("cannot remove {}: {e}", path.display());
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let stats = Arc::new(NetStats::default());

    let sockets = std::iter::once(cli.socket.clone())
        .chain(cli.ft_socket.clone())
        .collect();
    if let Err(e) = spawn_signal_thread(sockets, stats.clone()) {
        error!("cannot set up signal handling: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(addr) = cli.metrics_listen {
        if let Err(e) = serve_metrics(addr, stats.clone()) {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    }
    let tap = match Tap::open(&cli.tap) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let group = match cli.socket_group.as_deref().map(parse_group).transpose() {
        Ok(g) => g,
        Err(e) => {
            error!("--socket-group: {e}");
            return ExitCode::from(2);
        }
    };
    let frontend = FrontendSlot::new();
    let opts = GuardOptions {
        group,
        ..GuardOptions::default()
    };
    let guard = match Guard::bind(&cli.socket, &opts, frontend.clone()) {
        Ok(g) => g,
        Err(source) => {
            error!(
                "{}",
                ServeError::Listen {
                    path: cli.socket.display().to_string(),
                    source
                }
            );
            return ExitCode::FAILURE;
        }
    };
    let link = Arc::new(FtLink::new(tap.clone(), stats.clone()));
    if let Some(path) = &cli.ft_socket {
        let spawned = FtServer::bind(path, link.clone(), frontend, group).and_then(FtServer::spawn);
        if let Err(e) = spawned {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    }
    let mut server = Server::new(
        guard,
        cli.socket.clone(),
        NetConfig { mac: cli.mac },
        tap,
        stats,
        link,
    );
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
