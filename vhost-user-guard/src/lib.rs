//! `vhost-user-guard`: what stands between a vhost-user backend's socket and the
//! vhost-user-backend library (docs/ARCHITECTURE.md, "Hostile peers").
//!
//! vhost-user-backend 0.24 accepts a connection itself and maps each memory region a
//! frontend names without looking at the file behind it; its API has no hook before the
//! mapping and cannot be handed a connection accepted elsewhere. So the guard accepts the
//! frontends itself and relays each one to the library over a private socket:
//!
//! ```text
//! frontend --public socket--> guard: peer check, timeouts, regions --private socket--> library
//! ```
//!
//! - the public socket follows `ft_control::local` (mode 0600, or 0660 with a group; only a
//!   stale socket of ours is replaced);
//! - a frontend must be our user, root or (with a socket group) of that group
//!   (`SO_PEERCRED`);
//! - its first message must come within [`HANDSHAKE_TIMEOUT`] of connecting, and new
//!   connections wait for it together (`ft_control::accept`), so a silent one delays
//!   nobody and is dropped; a message once begun must be complete within
//!   [`MESSAGE_TIMEOUT`] (see `relay`);
//! - each memory region must lie within its file ([`regions`]);
//! - while a frontend is served, [`FrontendSlot`] names it, for the FT control socket (FT
//!   mode only for the process that owns the vhost-user connection).
//!
//! The private socket exists for an instant: a fresh listening socket at `PATH.relay` (mode
//! 0600) with a listen backlog of 0, so exactly one connection can wait; the guard connects
//! to it without waiting, removes the path, and lets the library accept. If the guard's own
//! connection could not queue, someone else got there first and the round is abandoned:
//! the library only ever accepts the guard's connection.

mod regions;
mod relay;

use std::fmt::Display;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ft_control::accept::{self, AcceptRules, Accepted};
use ft_control::local::{self, PeerCred, SocketError};
use vhost::vhost_user::Listener;

pub use regions::RegionError;
pub use relay::Session;

/// How long a new frontend may take to send its first message.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a frontend may take to finish a message it has begun.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many new connections may wait at once (silent, or waiting for the current frontend
/// to go); more are closed at once.
pub const MAX_WAITING: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("cannot start the accepting thread: {0}")]
    Spawn(io::Error),
    #[error("the accepting thread is gone")]
    AcceptorGone,
    #[error("cannot connect the library's end of the relay ({0}); dropping the frontend")]
    Relay(io::Error),
    #[error("{0}")]
    Start(String),
}

/// Options of [`Guard::bind`].
#[derive(Clone, Debug)]
pub struct GuardOptions {
    /// `--socket-group`: mode 0660 with this group, whose processes may connect too.
    pub group: Option<u32>,
    pub handshake_timeout: Duration,
}

impl Default for GuardOptions {
    fn default() -> Self {
        GuardOptions {
            group: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// The process whose vhost-user connection is being served, if any.
#[derive(Debug, Default)]
pub struct FrontendSlot(Mutex<Option<PeerCred>>);

/// Why an FT control client is refused.
#[derive(Debug, thiserror::Error)]
pub enum NotTheFrontend {
    #[error("pid {pid} is not the vhost-user frontend (pid {frontend})")]
    Other { pid: i32, frontend: i32 },
    #[error("no vhost-user frontend is connected (pid {0} asked)")]
    Nobody(i32),
}

impl FrontendSlot {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Option<PeerCred>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The frontend being served.
    pub fn get(&self) -> Option<PeerCred> {
        *self.lock()
    }

    pub fn set(&self, peer: Option<PeerCred>) {
        *self.lock() = peer;
    }

    /// Whether `peer` is the process of the frontend being served (what the FT control
    /// socket requires).
    pub fn owned_by(&self, peer: &PeerCred) -> Result<(), NotTheFrontend> {
        match self.get() {
            Some(f) if f.pid == peer.pid => Ok(()),
            Some(f) => Err(NotTheFrontend::Other {
                pid: peer.pid,
                frontend: f.pid,
            }),
            None => Err(NotTheFrontend::Nobody(peer.pid)),
        }
    }
}

/// A bound vhost-user socket with its guard.
pub struct Guard {
    relay_path: PathBuf,
    accepted: Receiver<Accepted>,
    frontend: Arc<FrontendSlot>,
}

impl Guard {
    /// Binds `path` and starts accepting; `frontend` will name the frontend being served.
    pub fn bind(
        path: &Path,
        opts: &GuardOptions,
        frontend: Arc<FrontendSlot>,
    ) -> Result<Guard, GuardError> {
        let listener = local::bind(path, opts.group)?;
        let rules = AcceptRules {
            what: "vhost-user",
            first_message: opts.handshake_timeout,
            max_waiting: MAX_WAITING,
            group: opts.group,
        };
        let accepted = accept::spawn(listener, rules).map_err(GuardError::Spawn)?;
        let mut relay_path = path.as_os_str().to_owned();
        relay_path.push(".relay");
        Ok(Guard {
            relay_path: relay_path.into(),
            accepted,
            frontend,
        })
    }

    /// Waits for the next frontend that passed the checks and hands its relay to the
    /// library: `start` gets a listener on which only the guard's connection waits (give
    /// it to `VhostUserDaemon::start`).
    pub fn serve_next<E: Display>(
        &mut self,
        start: impl FnOnce(&mut Listener) -> Result<(), E>,
    ) -> Result<Session, GuardError> {
        let a = self.accepted.recv().map_err(|_| GuardError::AcceptorGone)?;
        let inner = local::bind_with_backlog(&self.relay_path, None, 0)?;
        let ours = local::connect_now(&self.relay_path);
        let _ = std::fs::remove_file(&self.relay_path);
        let ours = ours.map_err(GuardError::Relay)?;
        let mut listener = Listener::from(inner);
        start(&mut listener).map_err(|e| GuardError::Start(e.to_string()))?;
        drop(listener);
        relay::start(a.stream, a.peer, ours, self.frontend.clone()).map_err(GuardError::Relay)
    }
}
