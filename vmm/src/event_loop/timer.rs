//! A non-blocking timerfd for event-loop subscribers (FT heartbeats, watchdogs, retries).

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::{EventLoopError, Registrar, Registration};

/// Work done at every expiry of a periodic timer, on the event-loop thread: it must not block.
pub trait Tick: Send + 'static {
    /// `false` ends it: the timer is closed and the work dropped.
    fn tick(&mut self) -> bool;
}

/// Runs `work` every `period` on the event loop until it says it is done.
pub fn every(events: &Registrar, period: Duration, work: impl Tick) -> Result<(), EventLoopError> {
    let timer = Timer::periodic(period)?;
    events.add(move |registration| Periodic {
        timer,
        work,
        registration,
        done: false,
    })
}

struct Periodic<T: Tick> {
    timer: Timer,
    work: T,
    registration: Registration,
    done: bool,
}

impl<T: Tick> Periodic<T> {
    fn end(&mut self) {
        self.done = true;
        self.registration.end();
    }
}

impl<T: Tick> MutEventSubscriber for Periodic<T> {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        if self.timer.expirations() == 0 || self.done {
            return;
        }
        if !self.work.tick() {
            self.end();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            log::error!("event loop: cannot watch a timer: {e}");
            self.end();
        }
    }
}

pub struct Timer {
    fd: TimerFd,
}

impl Timer {
    /// A timer that fires every `period`, first after one period.
    pub fn periodic(period: Duration) -> Result<Self, EventLoopError> {
        let mut fd = TimerFd::new().map_err(|e| EventLoopError::Timer(e.into()))?;
        set_nonblocking(fd.as_raw_fd()).map_err(EventLoopError::Timer)?;
        // A zero duration would disarm a timerfd.
        let period = period.max(Duration::from_micros(1));
        fd.reset(period, Some(period))
            .map_err(|e| EventLoopError::Timer(e.into()))?;
        Ok(Timer { fd })
    }

    /// Reads (and so acknowledges) the expirations since the last read; 0 if none.
    pub fn expirations(&self) -> u64 {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes (the expiration count) from our timerfd into a local buffer.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n == 8 {
            u64::from_ne_bytes(buf)
        } else {
            0 // EAGAIN: nothing expired since the last read
        }
    }
}

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Sets O_NONBLOCK on `fd`, so that reading it from the event loop never blocks the loop.
pub fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd the caller owns; only the O_NONBLOCK status flag changes.
    let rc = unsafe {
        libc::fcntl(
            fd,
            libc::F_SETFL,
            libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a write to the socket `fd` would not block now (poll(2) with a zero timeout).
/// Event-loop subscribers send small records only when this holds, so the loop never waits
/// for a peer that stopped reading.
pub fn writable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd on the stack, valid for the call; a zero timeout does not block.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLOUT != 0 && p.revents & (libc::POLLERR | libc::POLLHUP) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    struct Count(Arc<AtomicU32>, u32);
    impl Tick for Count {
        fn tick(&mut self) -> bool {
            self.0.fetch_add(1, Ordering::SeqCst) + 1 < self.1
        }
    }

    #[test]
    fn periodic_work_runs_on_the_loop_until_it_is_done_then_is_removed() {
        let event_loop = crate::event_loop::EventLoop::new().expect("event manager");
        let events = event_loop.registrar();
        let ticks = Arc::new(AtomicU32::new(0));
        // Added before the loop runs, like the subscribers of a VMM being built.
        every(&events, Duration::from_millis(1), Count(ticks.clone(), 3)).expect("add");
        let _thread = event_loop.spawn().expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(5);
        while ticks.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(ticks.load(Ordering::SeqCst), 3);
        // Done: no tick after the third, although the timer would have fired many times.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(ticks.load(Ordering::SeqCst), 3);
        // And added from another thread while the loop runs.
        let more = Arc::new(AtomicU32::new(0));
        every(&events, Duration::from_millis(1), Count(more.clone(), 2)).expect("add");
        let deadline = Instant::now() + Duration::from_secs(5);
        while more.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(more.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_periodic_timer_expires_and_reads_without_blocking() {
        let t = Timer::periodic(Duration::from_millis(2)).expect("timer");
        assert_eq!(t.expirations(), 0, "nothing expired yet, and no blocking");
        std::thread::sleep(Duration::from_millis(10));
        assert!(t.expirations() >= 1);
    }
}
