//! The event-loop thread (event-manager): host timers and file descriptors. Each subscriber
//! turns readiness into a `DeviceEvent` posted to the vCPU thread's `Inbox`, or does FT
//! housekeeping on a connection (heartbeats, watchdogs, connect and arbiter retries:
//! ft::timers); none of them touches guest-visible state.
//!
//! Subscribers are added before the loop starts (`EventLoop::add`) or later from any thread,
//! the loop's own included, through a `Registrar` (event-manager's remote endpoint: an
//! eventfd the loop watches and a queue of calls it runs on its own thread). A subscriber
//! whose work is over removes itself with its `Registration`.

mod connect;
mod pit_timer;
mod stdin;
mod timer;
mod vhost;

pub use connect::Connecting;
pub use pit_timer::{pit_timer, PitTimer, PitTimerHandle};
pub use stdin::StdinInput;
pub use timer::{every, writable_now, Tick, Timer};
pub use vhost::{BackendMonitor, CallWatch};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use event_manager::{
    EventManager, MutEventSubscriber, RemoteEndpoint, SubscriberId, SubscriberOps,
};

#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    #[error("cannot create the event manager: {0}")]
    EventManager(event_manager::Error),
    #[error("cannot create a host timer: {0}")]
    Timer(std::io::Error),
    #[error("cannot start the event-loop thread: {0}")]
    Spawn(std::io::Error),
    #[error("cannot hand a subscriber to the event loop: {0}")]
    Register(event_manager::Error),
}

pub type Subscriber = Box<dyn MutEventSubscriber + Send>;

/// The event manager before its thread starts.
pub struct EventLoop {
    manager: EventManager<Subscriber>,
}

/// Adds subscribers to a running (or not yet started) event loop, from any thread.
#[derive(Clone)]
pub struct Registrar {
    endpoint: RemoteEndpoint<Subscriber>,
}

/// A subscriber's own entry in the loop: `end` removes (and drops) it, closing its fds.
pub struct Registration {
    endpoint: RemoteEndpoint<Subscriber>,
    id: Arc<OnceLock<SubscriberId>>,
    /// Set by an `end` during `init` (the id is not known yet then).
    ended: Arc<AtomicBool>,
}

impl EventLoop {
    pub fn new() -> Result<Self, EventLoopError> {
        Ok(EventLoop {
            manager: EventManager::new().map_err(EventLoopError::EventManager)?,
        })
    }

    pub fn registrar(&self) -> Registrar {
        Registrar {
            endpoint: self.manager.remote_endpoint(),
        }
    }

    pub fn add(&mut self, subscriber: Subscriber) {
        self.manager.add_subscriber(subscriber);
    }

    /// Starts the event-loop thread. It runs until the process exits.
    pub fn spawn(mut self) -> Result<JoinHandle<()>, EventLoopError> {
        std::thread::Builder::new()
            .name("event-loop".into())
            .spawn(move || {
                crate::seccomp::enter(crate::seccomp::ThreadKind::EventLoop);
                loop {
                    if let Err(e) = self.manager.run() {
                        log::error!("event loop: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
            .map_err(EventLoopError::Spawn)
    }
}

impl Registrar {
    /// Hands the subscriber `make` builds to the loop, which registers it at its next
    /// wake-up (its `init` runs on the loop thread). `make` gets the subscriber's
    /// `Registration`, for removing itself when its work is over.
    pub fn add<S>(&self, make: impl FnOnce(Registration) -> S) -> Result<(), EventLoopError>
    where
        S: MutEventSubscriber + Send + 'static,
    {
        let id = Arc::new(OnceLock::new());
        let ended = Arc::new(AtomicBool::new(false));
        let subscriber: Subscriber = Box::new(make(Registration {
            endpoint: self.endpoint.clone(),
            id: id.clone(),
            ended: ended.clone(),
        }));
        self.endpoint
            .fire(
                move |ops: &mut dyn SubscriberOps<Subscriber = Subscriber>| {
                    // Set before the subscriber processes anything: both run on the loop thread.
                    let new = ops.add_subscriber(subscriber);
                    let _ = id.set(new);
                    if ended.load(Ordering::SeqCst) {
                        let _ = ops.remove_subscriber(new); // it gave up in `init`
                    }
                },
            )
            .map_err(EventLoopError::Register)
    }
}

impl Registration {
    /// Removes the subscriber from the loop (after the current `process` call returns).
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        let Some(&id) = self.id.get() else {
            return; // in `init`: removed as soon as it is registered
        };
        let removed = self.endpoint.fire(move |ops| {
            let _ = ops.remove_subscriber(id);
        });
        if let Err(e) = removed {
            log::error!("event loop: cannot remove a subscriber: {e}");
        }
    }
}

/// Tests: a running event loop (its thread lives as long as the test process).
#[cfg(test)]
pub fn running() -> Registrar {
    let event_loop = EventLoop::new().expect("event manager");
    let events = event_loop.registrar();
    event_loop.spawn().expect("event loop");
    events
}
