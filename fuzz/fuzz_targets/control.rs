//! Fuzzes the FT control channel's decoder (ft-control, VMM <-> backend): whatever a peer on
//! the Unix socket sends, reading it must return messages or an error, never panic, and never
//! allocate more than the bytes actually sent allow (run.sh sets -malloc_limit_mb).
#![no_main]

use std::io::Cursor;

use ft_control::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A stream of frames, as a backend or VMM would read it.
    let mut stream = Cursor::new(data);
    while let Ok(Some(msg)) = Message::read_from(&mut stream) {
        // What decodes must encode to a frame that decodes to the same message.
        let frame = msg.encode();
        let again = Message::decode(&frame[4..]).expect("own encoding decodes");
        assert_eq!(again, msg);
    }
    // A single body, without the length prefix.
    let _ = Message::decode(data);
});
