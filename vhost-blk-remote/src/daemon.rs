//! The accept loop: serves one vhost-user frontend at a time on a Unix socket, forever.
//!
//! When a frontend disconnects, or sends a malformed message (then its connection is
//! dropped with a logged error), the per-connection state (vrings, worker thread, sequencer)
//! is thrown away and the next connection on the same socket gets a fresh daemon. The NBD
//! client is shared by all connections and survives them.
//!
//! Frontends come through a `vhost_user_guard::Guard`: the socket is mode 0600 (0660 with
//! `--socket-group`), a frontend must be our user or root (or of that group), say something
//! within 5 s, and name memory regions that lie within their files; the library serves the
//! relayed connection.
//!
//! With an FT socket, the FT server runs beside it on its own thread; the FT state (mode,
//! held outputs) is process-wide and shared by every vhost-user connection. Only the
//! process of the frontend being served may open an FT connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vhost_user_backend::VhostUserDaemon;
use vhost_user_guard::{FrontendSlot, Guard, GuardError, GuardOptions};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::blk::{BackendOptions, BlkBackend, DeviceConfig, Executor};
use crate::ft::Ft;
use crate::nbd::Client;

/// Errors that stop the daemon (everything per-connection is only logged).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {path}: {source}")]
    Listen { path: PathBuf, source: GuardError },
    #[error("cannot create the per-connection backend: {0}")]
    Backend(#[from] std::io::Error),
    #[error("cannot create the vhost-user daemon: {0}")]
    Daemon(String),
    #[error(transparent)]
    Ft(#[from] ft_backend::ServerError),
}

/// What the daemon serves.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    pub read_only: bool,
    pub serial: String,
    pub backend: BackendOptions,
    /// FT control socket (`--ft-socket`); `None`: a plain vhost-user backend.
    pub ft_socket: Option<PathBuf>,
    /// `--socket-group`: both sockets mode 0660 with this group, whose processes may connect.
    pub socket_group: Option<u32>,
}

type Daemon = VhostUserDaemon<Arc<BlkBackend>>;

fn new_daemon(
    exec: &Arc<Executor>,
    cfg: &DaemonConfig,
    ft: &Option<Arc<Ft>>,
) -> Result<(Arc<BlkBackend>, Daemon), DaemonError> {
    let backend = Arc::new(BlkBackend::new(
        exec.clone(),
        cfg.backend.clone(),
        ft.clone(),
    )?);
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let daemon = VhostUserDaemon::new("vhost-blk-remote".into(), backend.clone(), mem)
        .map_err(|e| DaemonError::Daemon(e.to_string()))?;
    Ok((backend, daemon))
}

/// Serves frontends on `cfg.socket` until the process is killed. Returns only if the socket
/// cannot be bound.
pub fn serve(nbd: Arc<Client>, cfg: &DaemonConfig) -> Result<(), DaemonError> {
    // The FT socket first: once the vhost-user socket exists, both accept connections.
    let frontend = FrontendSlot::new();
    let ft = match &cfg.ft_socket {
        Some(path) => {
            let ft = Ft::new();
            ft_backend::FtServer::bind(path, ft.clone(), frontend.clone(), cfg.socket_group)?
                .spawn()?;
            Some(ft)
        }
        None => None,
    };
    let opts = GuardOptions {
        group: cfg.socket_group,
        ..GuardOptions::default()
    };
    let mut guard =
        Guard::bind(&cfg.socket, &opts, frontend).map_err(|source| DaemonError::Listen {
            path: cfg.socket.clone(),
            source,
        })?;
    let dev = DeviceConfig::from_export(&nbd.info(), cfg.read_only, &cfg.serial);
    log::info!(
        "device: {} sectors, blk_size {}, read-only {}, flush {}, discard {}",
        dev.capacity_sectors,
        dev.blk_size,
        dev.read_only,
        dev.flush,
        dev.discard
    );
    let exec = Arc::new(Executor::new(nbd, dev));
    loop {
        let (backend, mut daemon) = match new_daemon(&exec, cfg, &ft) {
            Ok(d) => d,
            Err(e) => {
                // Resource exhaustion (fds, threads): wait and try again rather than exit.
                log::error!("{e}; retrying in 1s");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        log::info!(
            "waiting for a vhost-user frontend on {}",
            cfg.socket.display()
        );
        match guard.serve_next(|listener| daemon.start(listener)) {
            Err(e) => {
                log::error!("accepting a frontend failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(session) => {
                log::info!("frontend connected");
                log::debug!("frontend: pid {}", session.peer().pid);
                match daemon.wait() {
                    Ok(()) => log::info!("frontend disconnected"),
                    Err(e) => log::error!("frontend connection dropped: {e}"),
                }
                drop(session);
            }
        }
        backend.disconnect();
        let workers = daemon.get_epoll_handlers();
        for w in &workers {
            w.send_exit_event();
        }
        drop(daemon);
        backend.release_exit_fds(&workers);
    }
}
