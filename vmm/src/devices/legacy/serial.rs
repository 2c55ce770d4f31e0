//! COM1: a 16550A UART (vm-superio) whose interrupt goes to IRQ 4 of the PIC.
//!
//! vm-superio calls a `Trigger` when the UART wants to interrupt; we only record that in a
//! flag, and the vCPU thread pulses IRQ 4 on the PIC after the port access that caused it, so
//! that the interrupt is raised at a landmark like every other one.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::{Serial, Trigger};

use crate::persist::Persist;

pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_IRQ: u8 = 4;

/// A `Trigger` that sets a flag; used for the UART interrupt and the i8042 reset line.
#[derive(Clone, Debug, Default)]
pub struct FlagTrigger(Arc<AtomicBool>);

impl FlagTrigger {
    /// Returns whether the trigger fired since the last call, and clears it.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

impl Trigger for FlagTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Where the guest's console output goes.
pub type ConsoleOut = Box<dyn Write + Send>;

/// vm-superio's `SerialState` has no serde support: serde's remote derive serializes it
/// through this copy of its (public) fields.
#[derive(Serialize, Deserialize)]
#[serde(remote = "SerialState")]
struct SerialStateDef {
    baud_divisor_low: u8,
    baud_divisor_high: u8,
    interrupt_enable: u8,
    interrupt_identification: u8,
    line_control: u8,
    line_status: u8,
    modem_control: u8,
    modem_status: u8,
    scratch: u8,
    in_buffer: Vec<u8>,
}

/// The UART's registers and receive FIFO, serializable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UartState(#[serde(with = "SerialStateDef")] pub SerialState);

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// vm-superio refuses a receive FIFO longer than its own.
    #[error("UART state refused: {0}")]
    Refused(String),
}

/// The UART plus its interrupt flag.
pub struct SerialConsole {
    uart: Serial<FlagTrigger, vm_superio::serial::NoEvents, ConsoleOut>,
    irq: FlagTrigger,
}

impl SerialConsole {
    pub fn new(out: ConsoleOut) -> Self {
        let irq = FlagTrigger::default();
        SerialConsole {
            uart: Serial::new(irq.clone(), out),
            irq,
        }
    }

    /// Register read at `offset` (0..8) from COM1_BASE.
    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// Register write; output errors (e.g. a closed stdout) are logged, never fatal to the guest.
    pub fn write(&mut self, offset: u8, value: u8) {
        if let Err(e) = self.uart.write(offset, value) {
            log::warn!("serial: write to register {offset} failed: {e:?}");
        }
    }

    /// Bytes typed by the user, queued in the receive FIFO (the excess is dropped when full,
    /// as a real UART does on overrun).
    pub fn enqueue_input(&mut self, bytes: &[u8]) {
        if let Err(e) = self.uart.enqueue_raw_bytes(bytes) {
            log::warn!("serial: input dropped: {e:?}");
        }
    }

    /// Replaces the UART's registers and FIFO with `state`, keeping the output. A state the
    /// UART refuses leaves it as it was (the output is not given up for a refused state).
    pub fn reload(&mut self, state: &UartState) -> Result<(), SerialError> {
        let sink = Box::new(std::io::sink()) as ConsoleOut;
        let checked = Self::restore(sink, state)?;
        let old = std::mem::replace(self, checked);
        *self = Self::restore(old.uart.into_writer(), state)?;
        Ok(())
    }

    /// Whether the UART raised its interrupt since the last call.
    pub fn take_irq(&mut self) -> bool {
        self.irq.take()
    }
}

/// The registers and FIFO are the state; the output (stdout, a file) is the host's and is
/// passed in. A pending interrupt is not part of it: the vCPU forwards the flag to the PIC
/// after every access, so it is clear at a landmark.
impl Persist for SerialConsole {
    type State = UartState;
    type ConstructorArgs = ConsoleOut;
    type Error = SerialError;

    fn save(&self) -> UartState {
        UartState(self.uart.state())
    }

    fn restore(out: ConsoleOut, state: &UartState) -> Result<Self, SerialError> {
        let irq = FlagTrigger::default();
        let uart = Serial::from_state(&state.0, irq.clone(), NoEvents, out)
            .map_err(|e| SerialError::Refused(e.to_string()))?;
        Ok(SerialConsole { uart, irq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A writer whose bytes the test can inspect.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    // 16550 register offsets (PC16550D datasheet, table II).
    const THR: u8 = 0;
    const IER: u8 = 1;
    const IIR: u8 = 2;
    const LSR: u8 = 5;

    #[test]
    fn transmitted_bytes_reach_the_output() {
        let cap = Capture::default();
        let mut s = SerialConsole::new(Box::new(cap.clone()));
        for b in b"hi\n" {
            s.write(THR, *b);
        }
        assert_eq!(&*cap.0.lock().expect("lock"), b"hi\n");
        // Transmitter always empty: LSR THRE (bit 5) and TEMT (bit 6) set.
        assert_eq!(s.read(LSR) & 0x60, 0x60);
    }

    #[test]
    fn received_bytes_raise_the_interrupt_when_enabled() {
        let mut s = SerialConsole::new(Box::new(Capture::default()));
        s.enqueue_input(b"x");
        assert!(!s.take_irq(), "no interrupt while IER is zero");
        s.write(IER, 0x01); // enable "received data available"
        s.enqueue_input(b"y");
        assert!(s.take_irq());
        assert!(!s.take_irq(), "take clears the flag");
        assert_eq!(
            s.read(IIR) & 0x0f,
            0x04,
            "IIR says: received data available"
        );
        assert_eq!(s.read(LSR) & 0x01, 0x01, "data ready");
        assert_eq!(s.read(THR), b'x');
        assert_eq!(s.read(THR), b'y');
        assert_eq!(s.read(LSR) & 0x01, 0x00);
    }

    #[test]
    fn state_round_trips_and_the_restored_uart_behaves_the_same() {
        let cap = Capture::default();
        let mut s = SerialConsole::new(Box::new(cap.clone()));
        s.write(IER, 0x01);
        s.write(3, 0x83); // LCR: DLAB set, 8 bits
        s.write(0, 0x0c); // divisor 12 (9600 baud)
        s.write(3, 0x03);
        s.enqueue_input(b"ab");
        let state = s.save();
        let json = serde_json::to_vec(&state).expect("serialize");
        let state: UartState = serde_json::from_slice(&json).expect("parse");
        assert_eq!(state, s.save());
        let copy_out = Capture::default();
        let mut copy = SerialConsole::restore(Box::new(copy_out.clone()), &state).expect("restore");
        assert_eq!(copy.save(), state);
        for u in [&mut s, &mut copy] {
            assert_eq!(u.read(IIR) & 0x0f, 0x04);
            assert_eq!(u.read(THR), b'a');
            assert_eq!(u.read(THR), b'b');
            u.write(THR, b'z');
        }
        assert_eq!(
            &*copy_out.0.lock().expect("lock"),
            b"z",
            "output goes to the new writer"
        );
    }

    #[test]
    fn a_refused_state_leaves_the_uart_and_its_output_alone() {
        let cap = Capture::default();
        let mut s = SerialConsole::new(Box::new(cap.clone()));
        let mut bad = s.save();
        bad.0.in_buffer = vec![0; 1 << 16];
        assert!(matches!(s.reload(&bad), Err(SerialError::Refused(_))));
        s.write(THR, b'k');
        assert_eq!(&*cap.0.lock().expect("lock"), b"k");
        let mut good = s.save();
        good.0.scratch = 0x5a;
        s.reload(&good).expect("reload");
        assert_eq!(s.read(7), 0x5a, "scratch register restored");
        s.write(THR, b'l');
        assert_eq!(
            &*cap.0.lock().expect("lock"),
            b"kl",
            "output kept across a reload"
        );
    }
}
