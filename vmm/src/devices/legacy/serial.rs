//! COM1: a 16550A UART (vm-superio) whose interrupt goes to IRQ 4 of the PIC.
//!
//! vm-superio calls a `Trigger` when the UART wants to interrupt; we only record that in a
//! flag, and the vCPU thread pulses IRQ 4 on the PIC after the port access that caused it, so
//! that the interrupt is raised at a landmark like every other one.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::{Serial, Trigger};

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

    pub fn state(&self) -> vm_superio::serial::SerialState {
        self.uart.state()
    }

    /// Replaces the UART's registers and FIFO with `state`, keeping the output.
    pub fn restore(&mut self, state: &vm_superio::serial::SerialState) -> Result<(), String> {
        let placeholder = Serial::new(self.irq.clone(), Box::new(std::io::sink()) as ConsoleOut);
        let old = std::mem::replace(&mut self.uart, placeholder);
        let out = old.into_writer();
        self.uart = Serial::from_state(state, self.irq.clone(), vm_superio::serial::NoEvents, out)
            .map_err(|e| format!("{e:?}"))?;
        Ok(())
    }

    /// Whether the UART raised its interrupt since the last call.
    pub fn take_irq(&mut self) -> bool {
        self.irq.take()
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
}
