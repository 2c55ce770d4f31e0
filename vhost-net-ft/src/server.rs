//! Serving frontends one after another on one socket path.
//!
//! The socket is bound once and stays bound for the life of the process (connections that
//! arrive while another frontend is served wait in the listen backlog). For every connection
//! a fresh [`NetBackend`] and `VhostUserDaemon` (vrings, worker thread) are made, so no state
//! leaks from one frontend to the next; the TAP, the counters and the FT link (the FT control
//! connection and its held outputs, which outlive a frontend) are shared. When the
//! connection ends — the frontend disconnected, or sent something that is not a valid
//! vhost-user message, which the library refuses by ending the connection — the outcome is
//! logged, the worker thread is stopped and joined, and the next frontend is accepted. The
//! process never exits because of a frontend.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::Duration;

use log::{error, info, warn};
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{Error as DaemonError, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::error::ServeError;
use crate::ft::FtLink;
use crate::net::backend::NetBackend;
use crate::net::config::NetConfig;
use crate::net::stats::NetStats;
use crate::tap::Tap;

/// Everything needed to serve frontends.
pub struct Server {
    socket: PathBuf,
    config: NetConfig,
    tap: Arc<Tap>,
    stats: Arc<NetStats>,
    link: Arc<FtLink>,
}

impl Server {
    /// A server for `socket` (not yet bound).
    pub fn new(
        socket: &Path,
        config: NetConfig,
        tap: Arc<Tap>,
        stats: Arc<NetStats>,
        link: Arc<FtLink>,
    ) -> Self {
        Server {
            socket: socket.to_path_buf(),
            config,
            tap,
            stats,
            link,
        }
    }

    /// Binds the socket (replacing a stale file) and serves frontends forever.
    /// Returns only if the socket cannot be bound or the daemon cannot be created.
    pub fn run(&self) -> Result<(), ServeError> {
        let mut listener =
            Listener::new(&self.socket, true).map_err(|source| ServeError::Listen {
                path: self.socket.display().to_string(),
                source,
            })?;
        info!(
            "listening on {} (TAP {}, MAC {})",
            self.socket.display(),
            self.tap.name(),
            self.config.mac
        );
        let mut connection: u64 = 0;
        loop {
            connection += 1;
            self.serve_one(&mut listener, connection)?;
        }
    }

    /// Accepts and serves one frontend until it goes away.
    fn serve_one(&self, listener: &mut Listener, connection: u64) -> Result<(), ServeError> {
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

        if let Err(e) = daemon.start(listener) {
            error!("accepting a frontend failed: {e}");
            thread::sleep(Duration::from_millis(100));
            return Ok(());
        }
        info!("connection {connection}: frontend connected");
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
        drop(daemon);
        drop(backend);
        info!(
            "connection {connection}: closed; counters: {}",
            self.stats.snapshot()
        );
        Ok(())
    }
}
