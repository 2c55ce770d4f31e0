//! `hello`: prints `guest: hello <command line>` and powers off.

use crate::cmdline::Cmdline;
use crate::serial::write_bytes;

pub fn run(cmdline: Cmdline) -> ! {
    crate::pic::init(0);
    write_bytes(b"guest: hello ");
    write_bytes(cmdline.raw());
    write_bytes(b"\n");
    crate::exit::poweroff()
}
