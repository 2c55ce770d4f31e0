//! Fuzz target for the logging-channel codec (vmm::ft::record). Each input is used three ways:
//! 1. as a raw byte stream, for `decode` (record after record) and for `RecordReader`, which
//!    must agree with each other and never panic;
//! 2. as the body of a frame whose magic, length and CRC are made right, so that the payload
//!    parser behind the checksum is reached; whatever it accepts must re-encode to the same
//!    bytes (the encoding is canonical);
//! 3. as the source of a structured `Record` (arbitrary), for which
//!    decode(encode(r)) == r, or encode refuses r because a field is over its limit; the
//!    encoded frame, with arbitrary bytes before or after it, then goes through 1.
#![no_main]

use std::io::{self, Read};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use vmm::ft::record::{
    decode, encode, ExitKind, ExitSignature, Kind, Record, RecordError, RecordReader, FRAME_HEADER, FRAME_TRAILER,
    MAGIC, MAX_DATA, MAX_DEVICE_NAME, MAX_REASON, MAX_RECORD, MAX_SERIAL, MAX_VM_ID,
};

fuzz_target!(|data: &[u8]| {
    raw_stream(data);
    sealed_body(data);
    let mut with_version = vec![vmm::ft::record::VERSION];
    with_version.extend_from_slice(data);
    sealed_body(&with_version);
    let _ = round_trip(&mut Unstructured::new(data));
});

/// Hands out its bytes `step` at a time.
struct Chunked<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn raw_stream(data: &[u8]) {
    let mut at = 0;
    let mut decoded = Vec::new();
    let end = loop {
        match decode(&data[at..]) {
            Ok(Some((seq, record, used))) => {
                assert!(used >= FRAME_HEADER + FRAME_TRAILER + 12 && used <= data.len() - at);
                let mut again = Vec::new();
                encode(seq, &record, &mut again).expect("a decoded record encodes");
                assert_eq!(again, &data[at..at + used], "encoding is not canonical");
                decoded.push((seq, record));
                at += used;
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };

    let first = decoded.first().map_or(1, |d| d.0);
    let step = data.len() % 17 + 1;
    let mut reader = RecordReader::starting_at(Chunked { data, step }, first);
    for (i, (seq, record)) in decoded.iter().enumerate() {
        match reader.next() {
            Ok(Some((s, r))) => assert!(s == *seq && r == *record, "reader and decode disagree"),
            Err(RecordError::Sequence { expected, got }) => {
                assert!(i > 0 && got == *seq && expected == decoded[i - 1].0.wrapping_add(1));
                return;
            }
            other => panic!("reader: {other:?}, decode: record {seq}"),
        }
    }
    match (end, reader.next()) {
        (None, Ok(None)) => assert_eq!(at, data.len()),
        (None, Err(RecordError::Truncated { need, have })) => {
            assert_eq!(have, data.len() - at);
            assert!(have > 0 && need > have);
        }
        (Some(_), Err(e)) => assert!(!matches!(e, RecordError::Truncated { .. } | RecordError::Io(_))),
        (end, other) => panic!("decode ended with {end:?}, reader with {other:?}"),
    }
}

fn sealed_body(body: &[u8]) {
    if body.len() > MAX_RECORD {
        return;
    }
    let mut frame = MAGIC.to_vec();
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(body);
    let crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    match decode(&frame) {
        Ok(Some((seq, record, used))) => {
            assert_eq!(used, frame.len());
            let mut again = Vec::new();
            encode(seq, &record, &mut again).expect("a decoded record encodes");
            assert_eq!(again, frame, "encoding is not canonical");
        }
        Ok(None) => panic!("a complete frame is reported incomplete"),
        Err(
            RecordError::UnsupportedVersion(_)
            | RecordError::UnknownKind(_)
            | RecordError::Malformed(_)
            | RecordError::FieldTooLong { .. },
        ) => {}
        Err(e) => panic!("framing error on a well-framed record: {e:?}"),
    }
}

/// A string of at most `max + 4` bytes; over `max` now and then.
fn string(u: &mut Unstructured, max: usize) -> arbitrary::Result<String> {
    // (ratio() is true on an exhausted input: ask for the common case.)
    if !u.ratio(7, 8)? {
        let len = u.int_in_range(max - 1..=max + 4)?;
        return Ok("é".repeat(len / 2) + &"x".repeat(len % 2));
    }
    let mut s = String::arbitrary(u)?;
    while s.len() > max + 4 {
        s.pop();
    }
    Ok(s)
}

/// Bytes. (Lengths around MAX_DATA are left to the unit tests: megabyte inputs that libFuzzer
/// keeps in its corpus once it sees their new coverage make it several times slower.)
fn bytes(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    Vec::arbitrary(u)
}

fn sig(u: &mut Unstructured) -> arbitrary::Result<ExitSignature> {
    Ok(ExitSignature {
        kind: *u.choose(&ExitKind::ALL)?,
        addr: u.arbitrary()?,
        size: u.arbitrary()?,
        data: u.arbitrary()?,
    })
}

fn record(u: &mut Unstructured) -> arbitrary::Result<Record> {
    Ok(match u.choose(Kind::ALL)? {
        Kind::Hello => Record::Hello { vm_id: string(u, MAX_VM_ID)?, epoch: u.arbitrary()?, mem_size: u.arbitrary()? },
        Kind::StateBegin => Record::StateBegin { landmark: u.arbitrary()? },
        Kind::MemoryChunk => Record::MemoryChunk { gpa: u.arbitrary()?, data: bytes(u)? },
        Kind::DeviceState => Record::DeviceState { name: string(u, MAX_DEVICE_NAME)?, blob: bytes(u)? },
        Kind::StateEnd => Record::StateEnd { landmark: u.arbitrary()?, digest: u.arbitrary()? },
        Kind::MemoryZero => Record::MemoryZero { gpa: u.arbitrary()?, len: u.arbitrary()? },
        Kind::Interrupt => Record::Interrupt { landmark: u.arbitrary()?, sig: sig(u)?, vector: u.arbitrary()? },
        Kind::ClockRead => Record::ClockRead { landmark: u.arbitrary()?, sig: sig(u)?, ns: u.arbitrary()? },
        Kind::TimerTick => Record::TimerTick { landmark: u.arbitrary()?, sig: sig(u)? },
        Kind::MemWrite => {
            Record::MemWrite { landmark: u.arbitrary()?, sig: sig(u)?, gpa: u.arbitrary()?, data: bytes(u)? }
        }
        Kind::SerialInput => Record::SerialInput { landmark: u.arbitrary()?, sig: sig(u)?, bytes: bytes(u)? },
        Kind::OutputDigest => Record::OutputDigest {
            landmark: u.arbitrary()?,
            slot: u.arbitrary()?,
            queue: u.arbitrary()?,
            head: u.arbitrary()?,
            digest: u.arbitrary()?,
        },
        Kind::Checkpoint => Record::Checkpoint { landmark: u.arbitrary()?, sig: sig(u)?, hash: u.arbitrary()? },
        Kind::VirtioUsed => Record::VirtioUsed { landmark: u.arbitrary()?, sig: sig(u)?, slot: u.arbitrary()? },
        Kind::Heartbeat => Record::Heartbeat { landmark: u.arbitrary()?, unix_ms: u.arbitrary()? },
        Kind::Ack => Record::Ack { seq: u.arbitrary()? },
        Kind::Diverged => Record::Diverged { landmark: u.arbitrary()?, reason: string(u, MAX_REASON)? },
    })
}

/// Whether `r` is within the limits that encode and decode enforce.
fn within_limits(r: &Record) -> bool {
    let range_ok = |gpa: u64, len: usize| gpa.checked_add(len as u64).is_some();
    match r {
        Record::Hello { vm_id, .. } => vm_id.len() <= MAX_VM_ID,
        Record::MemoryChunk { gpa, data } | Record::MemWrite { gpa, data, .. } => {
            data.len() <= MAX_DATA && range_ok(*gpa, data.len())
        }
        Record::DeviceState { name, blob } => name.len() <= MAX_DEVICE_NAME && blob.len() <= MAX_DATA,
        Record::Diverged { reason, .. } => reason.len() <= MAX_REASON,
        Record::SerialInput { bytes, .. } => bytes.len() <= MAX_SERIAL,
        Record::MemoryZero { gpa, len } => gpa.checked_add(*len).is_some(),
        _ => true,
    }
}

fn round_trip(u: &mut Unstructured) -> arbitrary::Result<()> {
    let seq = u64::arbitrary(u)?;
    let r = record(u)?;
    let prefix = Vec::<u8>::arbitrary(u)?;
    let mut out = prefix.clone();
    match encode(seq, &r, &mut out) {
        Ok(()) => {
            assert!(within_limits(&r), "encode accepted an over-limit record");
            assert_eq!(out[..prefix.len()], prefix[..], "encode changed what was before");
            let frame = &out[prefix.len()..];
            let (s, back, used) = decode(frame).expect("own encoding decodes").expect("complete");
            assert_eq!((s, used), (seq, frame.len()));
            assert_eq!(back, r);
            for cut in [0, FRAME_HEADER - 1, FRAME_HEADER, frame.len() / 2, frame.len() - 1] {
                assert!(matches!(decode(&frame[..cut]), Ok(None)), "prefix of {cut} bytes");
            }
            let mut reader = RecordReader::starting_at(frame, seq);
            assert_eq!(reader.next().expect("reader").expect("record"), (seq, r));
            assert!(matches!(reader.next(), Ok(None)));
            // A valid frame behind arbitrary bytes, and with arbitrary bytes behind it: the
            // stream paths with a checksum that holds, which random bytes almost never reach.
            raw_stream(&out);
            out.drain(..prefix.len());
            out.extend_from_slice(&prefix);
            raw_stream(&out);
        }
        Err(RecordError::FieldTooLong { .. } | RecordError::Malformed(_)) => {
            assert!(!within_limits(&r), "encode refused a valid record");
            assert_eq!(out, prefix, "a refused record left bytes behind");
        }
        Err(e) => panic!("encode: {e:?}"),
    }
    Ok(())
}
