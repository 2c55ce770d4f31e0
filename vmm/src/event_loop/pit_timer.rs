//! PIT channel 0's host timer: a timerfd armed by the vCPU thread, read by the event loop.

use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::EventLoopError;
use crate::devices::legacy::pit::TimerRequest;
use crate::inbox::{DeviceEvent, Inbox};

/// The host timer behind PIT channel 0, as seen by the event loop.
pub struct PitTimer {
    timer: TimerFd,
    inbox: Arc<Inbox>,
}

/// The vCPU thread's handle on the same timer: it re-arms it whenever the guest reprograms
/// the PIT. Both handles share one open file description (a dup'ed fd).
pub struct PitTimerHandle {
    timer: TimerFd,
}

/// Creates the non-blocking timerfd and its two handles.
pub fn pit_timer(inbox: Arc<Inbox>) -> Result<(PitTimer, PitTimerHandle), EventLoopError> {
    let timer = TimerFd::new().map_err(|e| EventLoopError::Timer(e.into()))?;
    let fd = timer.as_raw_fd();
    // Non-blocking, so that a re-arm racing with the event loop's read cannot block the loop.
    super::timer::set_nonblocking(fd).map_err(EventLoopError::Timer)?;
    // SAFETY: dup of a valid fd; the new fd is owned by the TimerFd built from it.
    let dup = unsafe { libc::dup(fd) };
    if dup < 0 {
        return Err(EventLoopError::Timer(std::io::Error::last_os_error()));
    }
    let handle = PitTimerHandle {
        // SAFETY: `dup` is a fresh fd that nothing else owns.
        timer: unsafe { TimerFd::from_raw_fd(dup) },
    };
    Ok((PitTimer { timer, inbox }, handle))
}

impl PitTimerHandle {
    /// Arms (or disarms) the host timer for what the PIT asks; deadlines are in VM-clock ns.
    pub fn arm(&mut self, request: &TimerRequest, now_ns: u64) {
        // A zero duration would disarm a timerfd; an expired deadline fires after 1 ns instead.
        let until = |deadline: u64| Duration::from_nanos(deadline.saturating_sub(now_ns).max(1));
        let result = match request {
            TimerRequest::Disarmed => self.timer.clear(),
            TimerRequest::OneShot { deadline_ns } => self.timer.reset(until(*deadline_ns), None),
            TimerRequest::Periodic {
                first_deadline_ns,
                period_ns,
            } => self.timer.reset(
                until(*first_deadline_ns),
                Some(Duration::from_nanos((*period_ns).max(1))),
            ),
        };
        if let Err(e) = result {
            log::error!("cannot arm the PIT host timer: {e}");
        }
    }
}

impl MutEventSubscriber for PitTimer {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes (the expiration count) from our timerfd into a local buffer.
        let n = unsafe { libc::read(self.timer.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n == 8 {
            let expirations = u64::from_ne_bytes(buf);
            self.inbox.post(DeviceEvent::PitTick {
                expirations,
                at: Instant::now(),
            });
        }
        // n < 0 with EAGAIN: the vCPU re-armed the timer after epoll saw it; nothing to do.
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            log::error!("cannot watch the PIT timer: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_loop::EventLoop;

    #[test]
    fn periodic_timer_posts_ticks() {
        let inbox = Arc::new(Inbox::new());
        let (timer, mut handle) = pit_timer(inbox.clone()).expect("timer");
        let mut event_loop = EventLoop::new().expect("event manager");
        event_loop.add(Box::new(timer));
        let _thread = event_loop.spawn().expect("event loop");
        handle.arm(
            &TimerRequest::Periodic {
                first_deadline_ns: 1_000_000,
                period_ns: 1_000_000,
            },
            0,
        );
        let mut ticks = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while ticks < 5 && Instant::now() < deadline {
            inbox.wait();
            for ev in inbox.drain() {
                if let DeviceEvent::PitTick { expirations, .. } = ev {
                    ticks += expirations;
                }
            }
        }
        handle.arm(&TimerRequest::Disarmed, 0);
        assert!(ticks >= 5, "got {ticks} ticks");
    }
}
