//! Fuzzes the control socket's request reader and parser (vmm::api): request lines are
//! bounded (no line longer than MAX_LINE is ever returned) and any bytes give a request or an
//! error reply, never a panic.
#![no_main]

use std::io::{BufReader, Cursor};

use libfuzzer_sys::fuzz_target;
use vmm::api::{parse_request, read_line, Line, MAX_LINE};

fuzz_target!(|data: &[u8]| {
    // A tiny buffer, so that lines straddle buffer refills.
    let mut reader = BufReader::with_capacity(7, Cursor::new(data));
    loop {
        match read_line(&mut reader) {
            Ok(Line::Text(line)) => {
                // At most MAX_LINE + 1 bytes were read; lossy UTF-8 may triple them.
                assert!(line.len() <= 3 * (MAX_LINE + 1), "a line of {} bytes", line.len());
                let _ = parse_request(&line);
            }
            Ok(Line::TooLong) | Ok(Line::Eof) | Err(_) => break,
        }
    }
});
