//! Guest modes, selected with `guest.mode=` (GUEST-ABI.md, "Guest modes"). Every mode ends by
//! powering off or by an intentional fault; none returns.
//!
//! To add a mode: a module here with `pub fn run(cmdline: Cmdline) -> !`, a row in `MODES`.

mod ballast;
mod fault;
mod hello;
mod kv;
mod pio;
mod spin;
mod ticks;
mod triple;

use crate::cmdline::{parse_u64, Cmdline};
use crate::exit::{fail, Failure};
use crate::serial::write_bytes;

/// Mode used when the command line has no `guest.mode=`.
const DEFAULT_MODE: &[u8] = b"hello";

/// Entry point of a mode.
type ModeFn = fn(Cmdline) -> !;

/// `guest.mode=` value -> entry point.
const MODES: &[(&[u8], ModeFn)] = &[
    (b"hello", hello::run),
    (b"ticks", ticks::run),
    (b"spin", spin::run),
    (b"fault", fault::run),
    (b"triple", triple::run),
    (b"pio", pio::run),
    (b"kv", kv::run),
];

/// Runs the mode the command line asks for.
pub fn run(cmdline: Cmdline) -> ! {
    let mode = cmdline.get("guest.mode").unwrap_or(DEFAULT_MODE);
    match MODES.iter().find(|(name, _)| *name == mode) {
        Some((_, run)) => run(cmdline),
        None => {
            print!("guest: unknown mode \"");
            write_bytes(mode);
            println!("\"");
            fail(Failure::Setup)
        }
    }
}

/// Numeric option `key` (e.g. `"guest.hz"`), `default` if absent. A malformed value or one
/// outside `range` is reported and ends the guest with `Failure::Setup`.
pub(crate) fn param(
    cmdline: Cmdline,
    key: &str,
    default: u64,
    range: core::ops::RangeInclusive<u64>,
) -> u64 {
    let Some(raw) = cmdline.get(key) else {
        return default;
    };
    match parse_u64(raw) {
        Some(value) if range.contains(&value) => value,
        _ => {
            print!("guest: invalid {key}=\"");
            write_bytes(raw);
            println!("\" (expected {}..={})", range.start(), range.end());
            fail(Failure::Setup)
        }
    }
}

/// `guest.hz=` (default 100) as a PIT reload value.
pub(crate) fn pit_divisor(cmdline: Cmdline) -> u16 {
    // 19 Hz is the slowest rate a 16-bit reload value gives (1193182 / 65535 = 18.2).
    let hz = param(
        cmdline,
        "guest.hz",
        100,
        19..=u64::from(crate::pit::INPUT_HZ),
    );
    crate::pit::divisor(hz as u32).expect("guest.hz range checked above")
}
