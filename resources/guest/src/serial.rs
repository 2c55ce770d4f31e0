//! COM1 output (16550A UART at 0x3F8).
//!
//! The VMM's UART accepts a byte whenever it is written, so output is a plain `out` to the
//! transmitter holding register, without polling LSR.THRE. Every byte is a VMM exit, about
//! 20 us from ring 3. No "\n" -> "\r\n" translation: the VMM copies bytes to stdout or a file.

use crate::arch::port::outb;
use core::fmt;

const COM1: u16 = 0x3f8;
const THR: u16 = COM1; // transmitter holding register (DLAB = 0)
const DLL: u16 = COM1; // divisor latch, low byte (DLAB = 1)
const IER: u16 = COM1 + 1; // interrupt enable (DLAB = 0)
const DLM: u16 = COM1 + 1; // divisor latch, high byte (DLAB = 1)
const LCR: u16 = COM1 + 3; // line control
const MCR: u16 = COM1 + 4; // modem control

const LCR_DLAB: u8 = 0x80;
const LCR_8N1: u8 = 0x03;
const MCR_DTR_RTS: u8 = 0x03; // OUT2 clear: on a PC it gates the UART's IRQ line, keep it off

/// Minimal 16550A set-up (16550A datasheet, register descriptions): UART interrupts off,
/// 115200 baud (divisor 1), 8 data bits, no parity, 1 stop bit. The emulated UART needs none
/// of this to transmit, but a real one would.
pub fn init() {
    outb(IER, 0x00);
    outb(LCR, LCR_DLAB);
    outb(DLL, 0x01);
    outb(DLM, 0x00);
    outb(LCR, LCR_8N1);
    outb(MCR, MCR_DTR_RTS);
}

/// Writes raw bytes.
pub fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        outb(THR, b);
    }
}

/// `core::fmt` sink for `print!`/`println!`.
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    // Serial::write_str never fails.
    let _ = fmt::Write::write_fmt(&mut Serial, args);
}

/// Prints to COM1.
#[allow(unused_macros)]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::_print(format_args!($($arg)*)) };
}

/// Prints a line to COM1.
macro_rules! println {
    () => { $crate::serial::_print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
