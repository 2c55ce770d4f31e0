//! The PC platform devices on port I/O, and the dispatch of port accesses to them.
//!
//! | ports | device |
//! | --- | --- |
//! | 0x20-0x21, 0xa0-0xa1 | 8259A PIC pair (`pic`) |
//! | 0x40-0x43, 0x61 | 8254 PIT and port B (`pit`) |
//! | 0x3f8-0x3ff | 16550A UART, COM1 (`serial`) |
//! | 0x60, 0x64 | i8042 (vm-superio): 0xfe on 0x64 resets = powers the VM off |
//! | 0x501 | guest failure port (docs/GUEST-ABI.md) |
//!
//! Unknown ports read as 0xff (an ISA bus with nothing driving it) and ignore writes.

pub mod pic;
pub mod pit;
pub mod serial;

use std::time::Instant;

use serde::{Deserialize, Serialize};
use vm_superio::I8042Device;

use crate::persist::Persist;
use pic::{Pic, PicState};
use pit::{Pit, PitState};
use serial::{ConsoleOut, FlagTrigger, SerialConsole, SerialError, UartState, COM1_BASE, COM1_IRQ};

pub const PIT_IRQ: u8 = 0;
pub const GUEST_FAILURE_PORT: u16 = 0x501;
const I8042_DATA_PORT: u16 = 0x60;
const I8042_COMMAND_PORT: u16 = 0x64;

/// What the vCPU loop must do after a port write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PioAction {
    None,
    /// The guest reset the machine through the i8042: power off.
    PowerOff,
    /// The guest wrote this code to the failure port.
    GuestFailure(u8),
    /// The PIT's channel 0 was reprogrammed: re-arm the host timer.
    PitReprogrammed,
    /// The guest sent an end-of-interrupt to the PIC.
    PicEoi,
}

/// The VM's notion of time for the PIT: nanoseconds since the VM was created (on a backup
/// that took over the state of a primary: since the primary's VM was created).
#[derive(Clone, Copy, Debug)]
pub struct VmClock {
    start: Instant,
    offset_ns: u64,
}

/// The register offset of `port` in a device whose ports start at `base` (the callers
/// match small port ranges: the UART's 8, the i8042's 5).
fn reg(port: u16, base: u16) -> u8 {
    u8::try_from(port.wrapping_sub(base)).unwrap_or(u8::MAX)
}

impl VmClock {
    pub fn new() -> Self {
        VmClock {
            start: Instant::now(),
            offset_ns: 0,
        }
    }
    /// A clock that reads `ns` now.
    pub fn starting_at(ns: u64) -> Self {
        VmClock {
            start: Instant::now(),
            offset_ns: ns,
        }
    }
    pub fn now_ns(&self) -> u64 {
        // u64 nanoseconds last 584 years.
        self.offset_ns + u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for VmClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The clock's state is the time it reads; a restored clock goes on from there.
impl Persist for VmClock {
    type State = u64;
    type ConstructorArgs = ();
    type Error = std::convert::Infallible;

    fn save(&self) -> u64 {
        self.now_ns()
    }

    fn restore((): (), ns: &u64) -> Result<Self, Self::Error> {
        Ok(VmClock::starting_at(*ns))
    }
}

/// The legacy devices' part of a saved machine (ft::state::MachineState).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyState {
    /// The VM clock (ns); a restored machine's clock continues from it.
    pub clock_ns: u64,
    pub pic: PicState,
    pub pit: PitState,
    pub uart: UartState,
}

pub struct LegacyDevices {
    pub pic: Pic,
    pub pit: Pit,
    pub serial: SerialConsole,
    i8042: I8042Device<FlagTrigger>,
    reset: FlagTrigger,
    pub clock: VmClock,
    /// The time the next PIT access sees, when the caller decides it (FT: logged/replayed).
    pub pit_now: Option<u64>,
}

impl LegacyDevices {
    pub fn new(console: ConsoleOut) -> Self {
        let reset = FlagTrigger::default();
        LegacyDevices {
            pic: Pic::new(),
            pit: Pit::new(),
            serial: SerialConsole::new(console),
            i8042: I8042Device::new(reset.clone()),
            reset,
            clock: VmClock::new(),
            pit_now: None,
        }
    }

    pub fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        let value = match port {
            0x20 | 0x21 | 0xa0 | 0xa1 => self.pic.pio_read(port),
            0x40..=0x43 | 0x61 => {
                let now = self.pit_now.take().unwrap_or_else(|| self.clock.now_ns());
                self.pit.pio_read(port, now)
            }
            p if (COM1_BASE..COM1_BASE + 8).contains(&p) => {
                let v = self.serial.read(reg(p, COM1_BASE));
                self.forward_serial_irq();
                v
            }
            I8042_DATA_PORT | I8042_COMMAND_PORT => self.i8042.read(reg(port, I8042_DATA_PORT)),
            _ => 0xff,
        };
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    pub fn pio_write(&mut self, port: u16, data: &[u8]) -> PioAction {
        let Some(&value) = data.first() else {
            return PioAction::None;
        };
        match port {
            0x20 | 0xa0 if is_eoi(value) => {
                self.pic.pio_write(port, value);
                PioAction::PicEoi
            }
            0x20 | 0x21 | 0xa0 | 0xa1 => {
                self.pic.pio_write(port, value);
                PioAction::None
            }
            0x40..=0x43 | 0x61 => {
                let now = self.pit_now.take().unwrap_or_else(|| self.clock.now_ns());
                self.pit.pio_write(port, value, now);
                if port == 0x61 {
                    PioAction::None
                } else {
                    PioAction::PitReprogrammed
                }
            }
            p if (COM1_BASE..COM1_BASE + 8).contains(&p) => {
                self.serial.write(reg(p, COM1_BASE), value);
                self.forward_serial_irq();
                PioAction::None
            }
            I8042_DATA_PORT | I8042_COMMAND_PORT => {
                let _ = self.i8042.write(reg(port, I8042_DATA_PORT), value);
                if self.reset.take() {
                    PioAction::PowerOff
                } else {
                    PioAction::None
                }
            }
            GUEST_FAILURE_PORT => PioAction::GuestFailure(value),
            _ => PioAction::None,
        }
    }

    /// Raises IRQ 4 if the UART asked for an interrupt.
    pub fn forward_serial_irq(&mut self) {
        if self.serial.take_irq() {
            self.pic.pulse_irq(COM1_IRQ);
        }
    }
}

/// The PC platform as one part: the PIC, PIT, UART and VM clock. Not saved: the i8042 (it
/// holds nothing between accesses the guests rely on; a restored one starts at power-on,
/// as it did before this trait), and `pit_now` (empty at every landmark).
impl Persist for LegacyDevices {
    type State = LegacyState;
    type ConstructorArgs = ConsoleOut;
    type Error = SerialError;

    fn save(&self) -> LegacyState {
        LegacyState {
            clock_ns: self.clock.save(),
            pic: self.pic.save(),
            pit: self.pit.save(),
            uart: self.serial.save(),
        }
    }

    fn restore(console: ConsoleOut, state: &LegacyState) -> Result<Self, SerialError> {
        let mut d = LegacyDevices::new(console);
        d.reload(state)?;
        Ok(d)
    }
}

impl LegacyDevices {
    /// Replaces the devices' state with `state`, keeping the console output. The UART, the
    /// only part that can refuse a state, goes first: a refused state changes nothing.
    pub fn reload(&mut self, state: &LegacyState) -> Result<(), SerialError> {
        self.serial.reload(&state.uart)?;
        let Ok(pic) = Pic::restore((), &state.pic);
        let Ok(pit) = Pit::restore((), &state.pit);
        let Ok(clock) = VmClock::restore((), &state.clock_ns);
        (self.pic, self.pit, self.clock) = (pic, pit, clock);
        self.pit_now = None;
        Ok(())
    }
}

/// OCW2 with the EOI bit (bit 5) set and bits 3-4 clear (8259A datasheet, "OCW2").
fn is_eoi(value: u8) -> bool {
    value & 0x18 == 0 && value & 0x20 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices() -> LegacyDevices {
        LegacyDevices::new(Box::new(std::io::sink()))
    }

    /// Devices whose master PIC is initialised: ICW1 (edge, cascade, ICW4), ICW2 base 0x20,
    /// ICW3, ICW4 8086, then all inputs unmasked.
    fn devices_with_pic() -> LegacyDevices {
        let mut d = devices();
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0x00),
        ] {
            d.pio_write(port, &[v]);
        }
        d
    }

    #[test]
    fn i8042_reset_powers_off() {
        let mut d = devices();
        assert_eq!(d.pio_write(0x64, &[0x00]), PioAction::None);
        assert_eq!(d.pio_write(0x64, &[0xfe]), PioAction::PowerOff);
    }

    #[test]
    fn failure_port_reports_the_code() {
        assert_eq!(
            devices().pio_write(GUEST_FAILURE_PORT, &[3]),
            PioAction::GuestFailure(3)
        );
    }

    #[test]
    fn unknown_ports_float_high() {
        let mut d = devices();
        let mut buf = [0u8; 2];
        d.pio_read(0x1234, &mut buf);
        assert_eq!(buf, [0xff, 0xff]);
        assert_eq!(d.pio_write(0x80, &[1]), PioAction::None);
    }

    #[test]
    fn pit_writes_ask_for_a_timer_rearm_and_eoi_is_seen() {
        let mut d = devices();
        assert_eq!(d.pio_write(0x43, &[0x34]), PioAction::PitReprogrammed);
        assert_eq!(d.pio_write(0x20, &[0x20]), PioAction::PicEoi);
        assert_eq!(
            d.pio_write(0x20, &[0x11]),
            PioAction::None,
            "ICW1 is not an EOI"
        );
    }

    #[test]
    fn serial_interrupt_reaches_the_pic() {
        let mut d = devices_with_pic();
        d.pio_write(COM1_BASE + 1, &[0x02]); // IER: transmitter holding register empty
        d.pio_write(COM1_BASE, b"a");
        assert!(d.pic.has_pending());
        assert_eq!(d.pic.acknowledge(), Some(0x20 + COM1_IRQ));
    }

    #[test]
    fn legacy_state_round_trips_and_the_copy_behaves_the_same() {
        let mut d = devices_with_pic();
        d.pio_write(0x43, &[0x34]); // counter 0, lobyte/hibyte, mode 2
        d.pit_now = Some(1_000);
        d.pio_write(0x40, &[0x9c]);
        d.pit_now = Some(1_000);
        d.pio_write(0x40, &[0x2e]);
        d.pio_write(COM1_BASE + 7, &[0x42]); // scratch
        d.pic.pulse_irq(PIT_IRQ);
        let state = d.save();
        let json = serde_json::to_vec(&state).expect("serialize");
        let back: LegacyState = serde_json::from_slice(&json).expect("parse");
        assert_eq!(back, state);
        let mut copy = LegacyDevices::restore(Box::new(std::io::sink()), &back).expect("restore");
        assert!(
            copy.clock.now_ns() >= state.clock_ns,
            "the clock goes on, never back"
        );
        let again = copy.save();
        assert_eq!(
            (&again.pic, &again.pit, &again.uart),
            (&state.pic, &state.pit, &state.uart)
        );
        let mut counts = Vec::new();
        for dev in [&mut d, &mut copy] {
            // The counter latched at the same guest time is the same on both.
            dev.pit_now = Some(2_000_000);
            dev.pio_write(0x43, &[0x00]); // latch counter 0
            let mut lo = [0u8];
            let mut hi = [0u8];
            dev.pit_now = Some(2_000_000);
            dev.pio_read(0x40, &mut lo);
            dev.pit_now = Some(2_000_000);
            dev.pio_read(0x40, &mut hi);
            counts.push(u16::from_le_bytes([lo[0], hi[0]]));
            let mut scratch = [0u8];
            dev.pio_read(COM1_BASE + 7, &mut scratch);
            assert_eq!(scratch[0], 0x42);
            assert_eq!(dev.pic.acknowledge(), Some(0x20));
        }
        assert_eq!(counts[0], counts[1]);
        assert!(
            counts[0] < 11932 && counts[0] > 9000,
            "counted down: {counts:?}"
        );
    }

    #[test]
    fn vm_clock_restores_to_the_saved_time() {
        let Ok(c) = VmClock::restore((), &5_000_000_000);
        let t = c.save();
        assert!((5_000_000_000..6_000_000_000).contains(&t), "{t}");
    }
}
