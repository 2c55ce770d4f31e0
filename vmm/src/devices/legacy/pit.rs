// Copyright 2026 the project authors.
// SPDX-License-Identifier: Apache-2.0

//! Userspace model of the Intel 8254 programmable interval timer as wired on a PC: counters
//! 0-2 at ports 0x40-0x42, the control word register at 0x43, counter 0 OUT on IRQ 0, and
//! counter 2 gated and observed through system control port B (0x61).
//!
//! The model has no clock of its own: every access carries the current guest time in
//! nanoseconds and counts are derived from `now_ns - load time`, so a replayed guest that sees
//! the same times reads the same counts (the VMM logs every value read; see the determinism
//! contract in the design brief). Counter 0 is not ticked either: [`Pit::channel0_timer`]
//! tells the VMM when IRQ 0 edges are due so that it can arm a host timer.
//!
//! Section and command names refer to the Intel 8254 datasheet (order no. 231164):
//! "Control Word Format", "Write Operations", "Read Operations", "Counter Latch Command",
//! "Read-Back Command", "Status Byte", "Mode Definitions" (Mode 0 "Interrupt on Terminal
//! Count" ... Mode 5 "Hardware Triggered Strobe") and "GATE Pin Operations Summary".

use serde::{Deserialize, Serialize};

use crate::persist::Persist;

/// Input clock of the PC's 8254 (14.31818 MHz / 12).
pub const PIT_HZ: u64 = 1_193_182;
/// Data port of counter 0; counters 1 and 2 follow.
pub const PIT_CHANNEL0: u16 = 0x40;
/// Control word register (write only).
pub const PIT_CONTROL: u16 = 0x43;
/// System control port B: gate of counter 2 (bit 0), speaker data (bit 1), OUT2 (bit 5).
pub const PORT_B: u16 = 0x61;

const NS_PER_SEC: u128 = 1_000_000_000;
/// Port B bit 4 toggles with every DRAM refresh request, every 15.085 us on a PC/AT.
const REFRESH_PERIOD_NS: u64 = 15_085;

/// What counter 0 needs from a host timer: the OUT rising edges (IRQ 0 edges) that come after
/// the last write, in guest time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerRequest {
    /// No interrupts will come: not programmed, or waiting for the rest of a count.
    Disarmed,
    /// Modes 2 and 3: an edge at `first_deadline_ns`, then every `period_ns`.
    Periodic {
        first_deadline_ns: u64,
        period_ns: u64,
    },
    /// Modes 0 and 4: a single edge.
    OneShot { deadline_ns: u64 },
}

/// The counting element after a count has been loaded (or a mode 1/5 trigger).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountRun {
    /// Initial count N, 1..=65536 (a written 0 means 65536 in binary counting).
    pub count: u32,
    /// Guest time at which counting (re)started.
    pub since_ns: u64,
    /// Clock pulses counted before `since_ns` (mode 0/4 counting suspended by GATE).
    pub base_ticks: u64,
    /// False while GATE suspends counting.
    pub running: bool,
}

/// One counter of the 8254.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitChannelState {
    /// M2-M0 as written (6 and 7 are aliases of 2 and 3); reported in the status byte.
    pub mode_bits: u8,
    /// RW1-RW0: 1 = LSB only, 2 = MSB only, 3 = LSB then MSB (0 is treated as 3).
    pub access: u8,
    /// BCD bit as written; counting is always binary.
    pub bcd: bool,
    /// Count register (CR): the last count written.
    pub reload: u16,
    /// A count was written since the last control word.
    pub count_written: bool,
    /// Counting element state; `None` until a count is loaded (or mode 1/5 is triggered).
    pub run: Option<CountRun>,
    /// Modes 2/3: a count written while counting, loaded at the end of the current cycle:
    /// (count, guest time of that cycle end).
    pub pending: Option<(u32, u64)>,
    /// Status bit 6: the count in CR has not been loaded into the counting element yet.
    pub null_count: bool,
    /// LSB written in LSB-then-MSB access, waiting for the MSB.
    pub write_lsb: Option<u8>,
    /// Unlatched LSB-then-MSB reads: the next read returns the MSB.
    pub read_msb_next: bool,
    /// Output latch filled by the counter latch or read-back command.
    pub count_latch: Option<u16>,
    /// The LSB of `count_latch` has been read.
    pub latch_msb_next: bool,
    /// Status latched by the read-back command; read before any latched count.
    pub status_latch: Option<u8>,
}

/// Snapshot of the three counters and port B.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitState {
    pub channels: [PitChannelState; 3],
    /// Writable bits 3-0 of port 0x61 (bit 0 = counter 2 GATE, bit 1 = speaker data).
    pub port_b: u8,
    /// Guest time of the last `pio_write`, the reference of `channel0_timer`.
    pub last_write_ns: u64,
}

/// A u128 intermediate back to u64, saturating (u64 nanoseconds last 584 years).
fn sat_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Clock pulses between two guest times.
fn ticks_between(since_ns: u64, now_ns: u64) -> u64 {
    sat_u64(u128::from(now_ns.saturating_sub(since_ns)) * u128::from(PIT_HZ) / NS_PER_SEC)
}

/// Smallest delay after which `ticks_between` reaches `ticks`.
fn ticks_to_ns(ticks: u64) -> u64 {
    sat_u64((u128::from(ticks) * NS_PER_SEC).div_ceil(u128::from(PIT_HZ)))
}

/// Host timer period for a reload value: N * 1e9 / PIT_HZ, rounded down.
fn period_ns(count: u32) -> u64 {
    sat_u64(u128::from(count) * NS_PER_SEC / u128::from(PIT_HZ))
}

impl CountRun {
    fn start(count: u32, now_ns: u64, running: bool) -> Self {
        CountRun {
            count,
            since_ns: now_ns,
            base_ticks: 0,
            running,
        }
    }

    fn elapsed(&self, now_ns: u64) -> u64 {
        let running = if self.running {
            ticks_between(self.since_ns, now_ns)
        } else {
            0
        };
        self.base_ticks + running
    }

    fn pause(&mut self, now_ns: u64) {
        self.base_ticks = self.elapsed(now_ns);
        self.running = false;
    }

    fn resume(&mut self, now_ns: u64) {
        if !self.running {
            self.since_ns = now_ns;
            self.running = true;
        }
    }
}

impl PitChannelState {
    fn mode(&self) -> u8 {
        match self.mode_bits {
            6 | 7 => self.mode_bits - 4,
            m => m,
        }
    }

    fn reload_count(&self) -> u32 {
        if self.reload == 0 {
            0x1_0000
        } else {
            u32::from(self.reload)
        }
    }

    /// Modes 2/3: load a count written during counting once its cycle has ended.
    fn settle(&mut self, now_ns: u64) {
        if let (Some((count, at)), Some(run)) = (self.pending, &self.run) {
            if run.running && now_ns >= at {
                self.run = Some(CountRun::start(count, at, true));
                self.pending = None;
                self.null_count = false;
            }
        }
    }

    /// The counting element as seen by a read ("Mode Definitions").
    fn count_at(&self, now_ns: u64) -> u16 {
        let Some(run) = &self.run else {
            // Nothing loaded yet: the datasheet leaves the CE undefined; show CR.
            return self.reload;
        };
        let n = u64::from(run.count);
        let e = run.elapsed(now_ns);
        let value = match self.mode() {
            // Mode 2 counts N, N-1, ..., 1 and reloads when it would reach 0.
            2 => n - e % n,
            // Mode 3 loads N (N-1 when odd) and decrements by two, reloading at each OUT
            // toggle: two sawtooths of N/2 clock pulses per period, even values only.
            3 => (n - (2 * (e % n)) % n) & !1,
            // Modes 0, 1, 4, 5 keep decrementing after terminal count, wrapping at 2^16.
            _ => n.wrapping_sub(e),
        };
        // The counting element is 16 bits wide: it wraps (8254 datasheet).
        let [lo, hi, ..] = value.to_le_bytes();
        u16::from_le_bytes([lo, hi])
    }

    /// Level of OUT ("Mode Definitions"; initial levels from "Control Word Format": after a
    /// control word OUT is low in mode 0 and high in every other mode).
    fn out_at(&self, now_ns: u64, gate: bool) -> bool {
        let Some(run) = &self.run else {
            return self.mode() != 0;
        };
        let n = u64::from(run.count);
        let e = run.elapsed(now_ns);
        match self.mode() {
            // Writing the first byte of a new count drives OUT low ("Mode 0").
            0 => self.write_lsb.is_none() && e >= n,
            // One-shot: low from the trigger until terminal count.
            1 => e >= n,
            // Low for one clock pulse when the count reaches 1; GATE low forces OUT high.
            2 => !gate || e % n != n - 1,
            // High for the first (N+1)/2 clock pulses, low for the rest; GATE low forces high.
            3 => !gate || e % n < n.div_ceil(2),
            // Strobe: low for one clock pulse at terminal count.
            _ => e != n,
        }
    }

    fn status(&self, now_ns: u64, gate: bool) -> u8 {
        (u8::from(self.out_at(now_ns, gate)) << 7)
            | (u8::from(self.null_count) << 6)
            | ((self.access & 3) << 4)
            | ((self.mode_bits & 7) << 1)
            | u8::from(self.bcd)
    }

    /// A control word for this counter (RW != 00): new mode, all control logic reset.
    fn write_control(&mut self, value: u8) {
        *self = PitChannelState {
            mode_bits: (value >> 1) & 7,
            access: (value >> 4) & 3,
            bcd: value & 1 != 0,
            reload: self.reload,
            null_count: true,
            ..Default::default()
        };
        if self.bcd {
            log::warn!("8254: BCD counting not supported; counting in binary");
        }
    }

    /// "Write Operations": one or two bytes depending on RW; then the count is loaded.
    fn write_data(&mut self, value: u8, now_ns: u64, gate: bool) {
        let count = match self.access {
            1 => u16::from(value),
            2 => u16::from(value) << 8,
            _ => match self.write_lsb.take() {
                Some(lsb) => u16::from(lsb) | u16::from(value) << 8,
                None => {
                    self.write_lsb = Some(value);
                    // Mode 0: "writing the first byte disables counting".
                    if self.mode() == 0 {
                        if let Some(run) = &mut self.run {
                            run.pause(now_ns);
                        }
                    }
                    return;
                }
            },
        };
        self.load(count, now_ns, gate);
    }

    /// Load a complete count. The datasheet loads CR into the counting element on the next
    /// clock pulse; we load at the write (one 838 ns pulse early).
    fn load(&mut self, count: u16, now_ns: u64, gate: bool) {
        self.reload = count;
        self.count_written = true;
        let n = self.reload_count();
        match self.mode() {
            0 | 4 => {
                self.run = Some(CountRun::start(n, now_ns, gate));
                self.null_count = false;
            }
            // Modes 2/3: a new count does not disturb the current cycle. (Mode 3 strictly
            // reloads at the end of the current half-cycle; we wait for the whole cycle so
            // that OUT restarts high.)
            2 | 3 => match &self.run {
                Some(run) if run.running => {
                    let old = u64::from(run.count);
                    let cycle_end = (run.elapsed(now_ns) / old + 1) * old;
                    let at = run.since_ns + ticks_to_ns(cycle_end - run.base_ticks);
                    self.pending = Some((n, at));
                    self.null_count = true;
                }
                _ => {
                    self.run = Some(CountRun::start(n, now_ns, gate));
                    self.pending = None;
                    self.null_count = false;
                }
            },
            // Modes 1/5: the count is loaded by the next GATE trigger.
            _ => self.null_count = true,
        }
    }

    /// "GATE Pin Operations Summary".
    fn set_gate(&mut self, old: bool, new: bool, now_ns: u64) {
        if old == new {
            return;
        }
        match (self.mode(), new) {
            // Modes 0/4: GATE low suspends counting, high resumes it.
            (0 | 4, _) => {
                if let Some(run) = &mut self.run {
                    if new {
                        run.resume(now_ns);
                    } else {
                        run.pause(now_ns);
                    }
                }
            }
            // Modes 2/3: GATE low stops counting (OUT high); a rising edge reloads CR.
            (2 | 3, false) => {
                if let Some(run) = &mut self.run {
                    run.pause(now_ns);
                }
            }
            (2 | 3, true) => {
                if self.run.is_some() {
                    let n = self.pending.take().map_or(self.reload_count(), |p| p.0);
                    self.run = Some(CountRun::start(n, now_ns, true));
                    self.null_count = false;
                }
            }
            // Modes 1/5: a rising edge (re)triggers with the count in CR.
            (_, true) => {
                if self.count_written {
                    self.run = Some(CountRun::start(self.reload_count(), now_ns, true));
                    self.null_count = false;
                }
            }
            (_, false) => {}
        }
    }

    /// "Counter Latch Command": ignored while a previous latch is unread.
    fn latch_count(&mut self, now_ns: u64) {
        if self.count_latch.is_none() {
            self.count_latch = Some(self.count_at(now_ns));
            self.latch_msb_next = false;
        }
    }

    /// "Read-Back Command" status latch: ignored while a previous status is unread.
    fn latch_status(&mut self, now_ns: u64, gate: bool) {
        if self.status_latch.is_none() {
            self.status_latch = Some(self.status(now_ns, gate));
        }
    }

    /// "Read Operations": a latched status first, then a latched count (released once all
    /// its bytes are read), else the live count, each byte taken at the time of its read.
    fn read_data(&mut self, now_ns: u64) -> u8 {
        if let Some(status) = self.status_latch.take() {
            return status;
        }
        let latched = self.count_latch.is_some();
        let value = self.count_latch.unwrap_or_else(|| self.count_at(now_ns));
        let flip = if latched {
            &mut self.latch_msb_next
        } else {
            &mut self.read_msb_next
        };
        let msb = match self.access {
            1 => false,
            2 => true,
            _ => {
                *flip = !*flip;
                !*flip
            }
        };
        if latched && (msb || self.access == 1) {
            self.count_latch = None;
            self.latch_msb_next = false;
        }
        value.to_le_bytes()[usize::from(msb)]
    }
}

/// The PC's 8254 with port B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pit {
    state: PitState,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

/// The counters and port B (times are guest times, as passed to `pio_read`/`pio_write`).
impl Persist for Pit {
    type State = PitState;
    type ConstructorArgs = ();
    type Error = std::convert::Infallible;

    fn save(&self) -> PitState {
        self.state.clone()
    }

    fn restore((): (), state: &PitState) -> Result<Self, Self::Error> {
        Ok(Pit {
            state: state.clone(),
        })
    }
}

impl Pit {
    /// Power-on state: no counter programmed (the firmware normally sets counter 0 to mode 3;
    /// the guests of this VMM program it themselves), counter 2 gate low.
    pub fn new() -> Self {
        let mut state = PitState::default();
        for ch in &mut state.channels {
            ch.access = 3;
        }
        Pit { state }
    }

    /// Guest read of 0x40-0x42 (counters) or 0x61 (port B). 0x43 is write only and, like any
    /// other port, reads 0xff.
    pub fn pio_read(&mut self, port: u16, now_ns: u64) -> u8 {
        self.settle(now_ns);
        match port {
            0x40..=0x42 => self.state.channels[usize::from(port - PIT_CHANNEL0)].read_data(now_ns),
            PORT_B => {
                let refresh = u8::from((now_ns / REFRESH_PERIOD_NS) & 1 == 1);
                let out2 = u8::from(self.state.channels[2].out_at(now_ns, self.gate(2)));
                (self.state.port_b & 0x0f) | (refresh << 4) | (out2 << 5)
            }
            _ => 0xff,
        }
    }

    /// Guest write of 0x40-0x43 or 0x61; other ports are ignored.
    pub fn pio_write(&mut self, port: u16, value: u8, now_ns: u64) {
        self.settle(now_ns);
        self.state.last_write_ns = now_ns;
        match port {
            0x40..=0x42 => {
                let index = usize::from(port - PIT_CHANNEL0);
                let gate = self.gate(index);
                self.state.channels[index].write_data(value, now_ns, gate);
            }
            PIT_CONTROL => self.write_control(value, now_ns),
            PORT_B => {
                let old = self.gate(2);
                self.state.port_b = value & 0x0f;
                let new = self.gate(2);
                self.state.channels[2].set_gate(old, new, now_ns);
            }
            _ => log::debug!("8254: write {value:#04x} to unhandled port {port:#x}"),
        }
    }

    /// What counter 0 (IRQ 0) needs from a host timer after the last write, counting only
    /// edges strictly after it, so that re-arming after any write keeps the phase of the
    /// model and never repeats an edge: mode 2/3 -> `Periodic` from the next cycle end (or
    /// the end of the current cycle when a new count is pending) with period
    /// N * 1e9 / PIT_HZ ns rounded down; mode 0 -> `OneShot` at terminal count; mode 4 ->
    /// `OneShot` one clock pulse later (the strobe's rising edge); a one-shot whose edge is
    /// not after the last write, modes 1/5 (GATE tied high: never triggered) and an
    /// unprogrammed counter -> `Disarmed`.
    pub fn channel0_timer(&self) -> TimerRequest {
        let ch = &self.state.channels[0];
        let after = self.state.last_write_ns;
        let Some(run) = ch.run.as_ref().filter(|r| r.running) else {
            return TimerRequest::Disarmed;
        };
        let n = u64::from(run.count);
        // Guest time of the clock pulse that brings the run's elapsed count to `ticks`.
        let edge = |ticks: u64| run.since_ns + ticks_to_ns(ticks.saturating_sub(run.base_ticks));
        let one_shot = |deadline_ns: u64| {
            if deadline_ns > after {
                TimerRequest::OneShot { deadline_ns }
            } else {
                TimerRequest::Disarmed
            }
        };
        match ch.mode() {
            2 | 3 => {
                let (count, first) = ch
                    .pending
                    .unwrap_or((run.count, edge((run.elapsed(after) / n + 1) * n)));
                TimerRequest::Periodic {
                    first_deadline_ns: first,
                    period_ns: period_ns(count),
                }
            }
            0 if ch.write_lsb.is_none() => one_shot(edge(n)),
            4 => one_shot(edge(n + 1)),
            _ => TimerRequest::Disarmed,
        }
    }

    /// GATE of counters 0 and 1 is tied high on the PC; counter 2's is port B bit 0.
    fn gate(&self, index: usize) -> bool {
        index != 2 || self.state.port_b & 1 != 0
    }

    fn settle(&mut self, now_ns: u64) {
        for ch in &mut self.state.channels {
            ch.settle(now_ns);
        }
    }

    /// "Control Word Format": SC1-SC0 select a counter or the read-back command;
    /// RW1-RW0 = 00 is the counter latch command.
    fn write_control(&mut self, value: u8, now_ns: u64) {
        let select = value >> 6;
        if select == 3 {
            // "Read-Back Command": D5 = 0 latches counts, D4 = 0 latches status, D3-D1
            // select counters 2, 1, 0.
            for index in 0..3 {
                if value & (2 << index) == 0 {
                    continue;
                }
                let gate = self.gate(index);
                let ch = &mut self.state.channels[index];
                if value & 0x20 == 0 {
                    ch.latch_count(now_ns);
                }
                if value & 0x10 == 0 {
                    ch.latch_status(now_ns, gate);
                }
            }
            return;
        }
        let ch = &mut self.state.channels[usize::from(select)];
        if value & 0x30 == 0 {
            ch.latch_count(now_ns);
        } else {
            ch.write_control(value);
        }
    }
}

#[cfg(test)]
#[path = "pit_tests.rs"]
mod tests;
