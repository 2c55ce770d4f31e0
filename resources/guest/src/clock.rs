//! The guest's only clock: PIT channel 0 interrupts (IRQ 0) counted by the ring-0 stub.
//! Time is a function of the interrupts delivered, never of rdtsc or another free-running
//! counter, so that a replayed guest sees exactly the same times (the determinism contract,
//! docs: design-brief.md).

use crate::arch::irq;

const TIMER_IRQ: usize = 0;

#[derive(Clone, Copy)]
pub struct Clock {
    hz: u64,
}

impl Clock {
    /// A clock for a PIT running at `hz` interrupts per second.
    pub fn new(hz: u64) -> Self {
        assert!(hz > 0);
        Self { hz }
    }

    pub fn hz(&self) -> u64 {
        self.hz
    }

    /// Timer interrupts so far.
    pub fn ticks(&self) -> u64 {
        irq::count(TIMER_IRQ)
    }

    /// Milliseconds since the PIT was started.
    pub fn millis(&self) -> u64 {
        self.ticks() * 1000 / self.hz
    }
}
