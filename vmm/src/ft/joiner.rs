//! The primary's joiner, on the event loop: while the primary has no backup (`wanted`) and
//! knows where to look (`target`: `--peer`, or the control socket's `protect`), it tries to
//! connect there every `RETRY`, each attempt given `CONNECT_TIMEOUT`. A connection goes to
//! the vCPU thread (`BackupConnected`), which transfers the state at its next landmark.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::link::{Dialled, LinkStream};
use crate::event_loop::{Connecting, EventLoopError, Registrar, Registration, Timer};
use crate::inbox::{DeviceEvent, Inbox};
use crate::sync::lock;

const RETRY: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Starts the joiner. It ends when the `wanted` flag's owner (the primary) is gone.
pub fn start(
    events: &Registrar,
    target: Arc<Mutex<Option<SocketAddr>>>,
    wanted: Arc<AtomicBool>,
    inbox: Arc<Inbox>,
    handshake: Option<std::sync::mpsc::Sender<Dialled>>,
) -> Result<(), EventLoopError> {
    let timer = Timer::periodic(RETRY)?;
    events.add(move |registration| Joiner {
        timer,
        target,
        wanted,
        inbox,
        handshake,
        attempt: None,
        registration,
    })
}

struct Joiner {
    timer: Timer,
    target: Arc<Mutex<Option<SocketAddr>>>,
    wanted: Arc<AtomicBool>,
    inbox: Arc<Inbox>,
    /// TLS: connections go to the handshake thread (ft::link) first; None: `--ft-insecure`.
    handshake: Option<std::sync::mpsc::Sender<Dialled>>,
    attempt: Option<Connecting>,
    registration: Registration,
}

impl Joiner {
    fn on_timer(&mut self, ops: &mut EventOps) {
        if Arc::strong_count(&self.wanted) == 1 {
            // The primary that wanted a backup is gone (it halted, or this VMM stops).
            self.drop_attempt(ops);
            self.registration.end();
            return;
        }
        if self
            .attempt
            .as_ref()
            .is_some_and(|a| a.older_than(CONNECT_TIMEOUT))
        {
            self.drop_attempt(ops);
        }
        let peer = *lock(&self.target);
        let (Some(peer), true, None) = (peer, self.wanted.load(Ordering::SeqCst), &self.attempt)
        else {
            return;
        };
        // A refused or unreachable peer is the normal case until the backup starts.
        let Ok(attempt) = Connecting::start(peer) else {
            return;
        };
        if ops.add(Events::new(&attempt, EventSet::OUT)).is_ok() {
            self.attempt = Some(attempt);
        }
    }

    fn on_socket(&mut self, ops: &mut EventOps) {
        let connected = self.attempt.as_ref().map(Connecting::is_connected);
        match connected {
            Some(Ok(true)) => {}
            Some(Ok(false)) | None => return,
            Some(Err(_)) => return self.drop_attempt(ops), // refused: the next tick retries
        }
        let Some(attempt) = self.take_attempt(ops) else {
            return;
        };
        match attempt.into_stream() {
            // A `protect` or a lost backup may have changed what is wanted meanwhile; the
            // vCPU thread decides what to do with the connection.
            Ok(tcp) if self.wanted.swap(false, Ordering::SeqCst) => {
                match (&self.handshake, *lock(&self.target)) {
                    (None, _) => self
                        .inbox
                        .post(DeviceEvent::BackupConnected(LinkStream::Tcp(tcp))),
                    (Some(tx), Some(peer)) => {
                        let dialled = Dialled {
                            tcp,
                            peer,
                            wanted: self.wanted.clone(),
                            inbox: self.inbox.clone(),
                        };
                        if tx.send(dialled).is_err() {
                            self.wanted.store(true, Ordering::SeqCst);
                        }
                    }
                    (Some(_), None) => self.wanted.store(true, Ordering::SeqCst),
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!("ft: joiner: {e}"),
        }
    }

    fn take_attempt(&mut self, ops: &mut EventOps) -> Option<Connecting> {
        let attempt = self.attempt.take()?;
        let _ = ops.remove(Events::new(&attempt, EventSet::OUT));
        Some(attempt)
    }

    fn drop_attempt(&mut self, ops: &mut EventOps) {
        drop(self.take_attempt(ops));
    }
}

impl MutEventSubscriber for Joiner {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.timer.as_raw_fd() {
            if self.timer.expirations() > 0 {
                self.on_timer(ops);
            }
        } else {
            self.on_socket(ops);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            log::error!("ft: cannot start the joiner: {e}");
            self.registration.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_joiner_connects_once_a_backup_listens_and_only_while_wanted() {
        let events = crate::event_loop::running();
        // A port nobody listens on yet: take one, then close it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let target = Arc::new(Mutex::new(Some(addr)));
        let wanted = Arc::new(AtomicBool::new(true));
        let inbox = Arc::new(Inbox::new());
        start(&events, target, wanted.clone(), inbox.clone(), None).expect("joiner");
        std::thread::sleep(RETRY * 2); // refused attempts meanwhile
        assert!(inbox.drain().is_empty());
        let listener = std::net::TcpListener::bind(addr).expect("listen");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            got = inbox.drain().into_iter().find_map(|e| match e {
                DeviceEvent::BackupConnected(LinkStream::Tcp(s)) => Some(s),
                _ => None,
            });
        }
        let stream = got.expect("a connection to the listener");
        let (accepted, _) = listener.accept().expect("accept");
        assert_eq!(stream.local_addr().ok(), accepted.peer_addr().ok());
        assert!(!wanted.load(Ordering::SeqCst), "one connection per wish");
        // Not wanted any more: no second connection.
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::sleep(RETRY * 3);
        assert!(listener.accept().is_err(), "no connection while not wanted");
    }
}
