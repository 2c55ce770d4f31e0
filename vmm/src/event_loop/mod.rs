//! The event-loop thread (event-manager): host timers and file descriptors. Each subscriber
//! turns readiness into a `DeviceEvent` posted to the vCPU thread's `Inbox`; none of them
//! touches guest-visible state.

mod pit_timer;
mod stdin;
mod vhost;

pub use pit_timer::{pit_timer, PitTimer, PitTimerHandle};
pub use stdin::StdinInput;
pub use vhost::{BackendMonitor, CallWatch};

use std::thread::JoinHandle;
use std::time::Duration;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};

#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    #[error("cannot create the event manager: {0}")]
    EventManager(event_manager::Error),
    #[error("cannot create a host timer: {0}")]
    Timer(std::io::Error),
    #[error("cannot start the event-loop thread: {0}")]
    Spawn(std::io::Error),
}

pub type Subscriber = Box<dyn MutEventSubscriber + Send>;

/// Starts the event-loop thread with `subscribers`. It runs until the process exits.
pub fn spawn(subscribers: Vec<Subscriber>) -> Result<JoinHandle<()>, EventLoopError> {
    let mut manager: EventManager<Subscriber> =
        EventManager::new().map_err(EventLoopError::EventManager)?;
    for s in subscribers {
        manager.add_subscriber(s);
    }
    std::thread::Builder::new()
        .name("event-loop".into())
        .spawn(move || loop {
            if let Err(e) = manager.run() {
                log::error!("event loop: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .map_err(EventLoopError::Spawn)
}
