//! Serving frontends one after another on one socket path.
//!
//! The socket is bound once and stays bound for the life of the process; frontends come
//! through a `vhost_user_guard::Guard` (mode 0600 or 0660 with `--socket-group`, peer uid
//! checked, first message within 5 s, memory regions checked against their files before the
//! library maps them). Connections that arrive while another frontend is served wait in the
//! guard (the silent ones are dropped after the handshake timeout). For every connection
//! a fresh [`NetBackend`] and `VhostUserDaemon` (vrings, worker thread) are made, so no state
//! leaks from one frontend to the next; the TAP, the counters and the FT link (the FT control
//! connection and its held outputs, which outlive a frontend) are shared. When the
//! connection ends — the frontend disconnected, or sent something that is not a valid
//! vhost-user message, which the library refuses by ending the connection — the outcome is
//! logged, the worker thread is stopped and joined, and the next frontend is accepted. The
//! process never exits because of a frontend.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::Duration;

use log::{debug, error, info, warn};
use vhost::vhost_user::Error as VhostUserError;
use vhost_user_backend::{Error as DaemonError, VhostUserDaemon};
use vhost_user_guard::Guard;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::error::ServeError;
use crate::ft::FtLink;
use crate::net::backend::NetBackend;
use crate::net::config::NetConfig;
use crate::net::stats::NetStats;
use crate::tap::Tap;

/// Everything needed to serve frontends.
pub struct Server {
    guard: Guard,
    socket: PathBuf,
    config: NetConfig,
    tap: Arc<Tap>,
    stats: Arc<NetStats>,
    link: Arc<FtLink>,
}

impl Server {
    /// A server for the frontends that come through `guard` (bound at `socket`).
    pub fn new(
        guard: Guard,
        socket: PathBuf,
        config: NetConfig,
        tap: Arc<Tap>,
        stats: Arc<NetStats>,
        link: Arc<FtLink>,
    ) -> Self {
        Server {
            guard,
            socket,
            config,
            tap,
            stats,
            link,
        }
    }

    /// Serves frontends forever. Returns only if the daemon cannot be created.
    pub fn run(&mut self) -> Result<(), ServeError> {
        info!(
            "listening on {} (TAP {}, MAC {})",
            self.socket.display(),
            self.tap.name(),
            self.config.mac
        );
        let mut connection: u64 = 0;
        loop {
            connection += 1;
            self.serve_one(connection)?;
        }
    }

    /// Accepts and serves one frontend until it goes away.
    fn serve_one(&mut self, connection: u64) -> Result<(), ServeError> {
        let backend = Arc::new(RwLock::new(NetBackend::new(
            self.config,
            self.tap.clone(),
            self.stats.clone(),
            self.link.clone(),
        )));
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new("vhost-net-ft".to_string(), backend.clone(), mem)
            .map_err(|e| ServeError::Daemon(e.to_string()))?;
        if let Some(handler) = daemon.get_epoll_handlers().first() {
            backend
                .write()
                .map_err(|_| ServeError::Poisoned)?
                .attach_epoll(Arc::downgrade(handler));
        }

        let session = match self.guard.serve_next(|listener| daemon.start(listener)) {
            Ok(s) => s,
            Err(e) => {
                error!("accepting a frontend failed: {e}");
                thread::sleep(Duration::from_millis(100));
                return Ok(());
            }
        };
        info!("connection {connection}: frontend connected");
        debug!(
            "connection {connection}: frontend pid {}",
            session.peer().pid
        );
        match daemon.wait() {
            Ok(()) | Err(DaemonError::HandleRequest(VhostUserError::Disconnected)) => {
                info!("connection {connection}: frontend disconnected")
            }
            Err(DaemonError::HandleRequest(VhostUserError::PartialMessage)) => {
                warn!("connection {connection}: frontend disconnected in the middle of a message")
            }
            Err(e) => error!("connection {connection}: dropped: {e}"),
        }
        // Dropping the daemon stops and joins its worker thread; then the backend goes.
        drop(session);
        drop(daemon);
        drop(backend);
        info!(
            "connection {connection}: closed; counters: {}",
            self.stats.snapshot()
        );
        Ok(())
    }
}
