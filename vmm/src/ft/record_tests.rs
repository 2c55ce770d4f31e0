use super::*;
use std::io::{self, Cursor as IoCursor, Read};

fn sig(kind: ExitKind, addr: u64, size: u8, data: u64) -> ExitSignature {
    ExitSignature {
        kind,
        addr,
        size,
        data,
    }
}

/// At least one record of every kind, with edge values: empty and maximal data and strings,
/// zero and u64::MAX numbers, every exit kind.
fn samples() -> Vec<Record> {
    let hlt = sig(ExitKind::Hlt, 0, 0, 0);
    let out = sig(ExitKind::PioOut, 0x3f8, 1, 0x41);
    let max = sig(ExitKind::MmioWrite, u64::MAX, u8::MAX, u64::MAX);
    vec![
        Record::Hello {
            vm_id: String::new(),
            epoch: 0,
            mem_size: 0,
        },
        Record::Hello {
            vm_id: "é".repeat(MAX_VM_ID / 2),
            epoch: u64::MAX,
            mem_size: 256 << 20,
        },
        Record::StateBegin { landmark: 0 },
        Record::StateBegin { landmark: u64::MAX },
        Record::MemoryChunk {
            gpa: 0,
            data: Vec::new(),
        },
        Record::MemoryChunk {
            gpa: 0x1000,
            data: (0..MAX_DATA).map(|i| (i * 7).to_le_bytes()[0]).collect(),
        },
        Record::MemoryChunk {
            gpa: u64::MAX - 3,
            data: vec![1, 2, 3],
        },
        Record::DeviceState {
            name: String::new(),
            blob: Vec::new(),
        },
        Record::DeviceState {
            name: "n".repeat(MAX_DEVICE_NAME),
            blob: vec![0xa5; MAX_DATA],
        },
        Record::StateEnd {
            landmark: 42,
            digest: [0xff; 32],
        },
        Record::MemoryZero {
            gpa: 0x20_0000,
            len: 1 << 30,
        },
        Record::MemoryZero {
            gpa: u64::MAX,
            len: 0,
        },
        Record::Interrupt {
            landmark: 1,
            sig: hlt,
            vector: 0x20,
        },
        Record::Interrupt {
            landmark: u64::MAX,
            sig: max,
            vector: 0xff,
        },
        Record::ClockRead {
            landmark: 7,
            sig: sig(ExitKind::PioIn, 0x40, 1, 0),
            ns: u64::MAX,
        },
        Record::TimerTick {
            landmark: 8,
            sig: sig(ExitKind::MmioRead, 0xd000_0070, 4, 0),
        },
        Record::MemWrite {
            landmark: 9,
            sig: out,
            gpa: 0x10_0000,
            data: Vec::new(),
        },
        Record::MemWrite {
            landmark: 9,
            sig: out,
            gpa: 0,
            data: vec![0x5a; MAX_DATA],
        },
        Record::SerialInput {
            landmark: 10,
            sig: max,
            bytes: vec![b'x'; MAX_SERIAL],
        },
        Record::OutputDigest {
            landmark: 11,
            slot: 2,
            queue: 1,
            head: 32767,
            digest: std::array::from_fn(|i| u8::try_from(i).expect("32")),
        },
        Record::Checkpoint {
            landmark: 12,
            sig: sig(ExitKind::MmioWrite, 0xd000_0050, 4, 1),
            hash: u64::MAX,
        },
        Record::VirtioUsed {
            landmark: 12,
            sig: hlt,
            slot: u16::MAX,
        },
        Record::Heartbeat {
            landmark: 0,
            unix_ms: 1_700_000_000_000,
        },
        Record::Ack { seq: 0 },
        Record::Ack { seq: u64::MAX },
        Record::Diverged {
            landmark: 13,
            reason: String::new(),
        },
        Record::Diverged {
            landmark: 14,
            reason: "x".repeat(MAX_REASON),
        },
    ]
}

/// The small samples (no megabyte payloads), for the byte-by-byte tests.
fn small_samples() -> Vec<Record> {
    samples()
        .into_iter()
        .filter(|r| frame(1, r).len() < 4096)
        .collect()
}

fn frame(seq: u64, r: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    encode(seq, r, &mut out).expect("sample records are valid");
    out
}

/// Recomputes body_len and the CRC of a frame whose body was edited by a test.
fn reseal(mut f: Vec<u8>) -> Vec<u8> {
    f.truncate(f.len() - FRAME_TRAILER);
    let body_len = u32::try_from(f.len() - FRAME_HEADER).expect("small frame");
    f[4..8].copy_from_slice(&body_len.to_le_bytes());
    let crc = checksum(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

/// A frame around an arbitrary body, with a correct length and CRC.
fn frame_around(body: &[u8]) -> Vec<u8> {
    let mut f = MAGIC.to_vec();
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(body);
    f.extend_from_slice(&[0; 4]);
    reseal(f)
}

fn body_header(kind: u8, seq: u64) -> Vec<u8> {
    let mut b = vec![VERSION, kind, 0, 0];
    b.extend_from_slice(&seq.to_le_bytes());
    b
}

#[test]
fn samples_cover_every_kind() {
    let codes: Vec<u8> = Kind::ALL.iter().map(|k| *k as u8).collect();
    assert_eq!(
        codes,
        [
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
            0x20, 0x30, 0x31
        ]
    );
    let kinds: Vec<Kind> = samples().iter().map(Record::kind).collect();
    for &k in Kind::ALL {
        assert!(kinds.contains(&k), "no sample of {k:?}");
        assert_eq!(Kind::from_u8(k as u8), Some(k));
    }
    let exits: Vec<ExitKind> = samples()
        .iter()
        .filter_map(|r| match r {
            Record::Interrupt { sig, .. }
            | Record::ClockRead { sig, .. }
            | Record::TimerTick { sig, .. }
            | Record::MemWrite { sig, .. }
            | Record::SerialInput { sig, .. }
            | Record::Checkpoint { sig, .. }
            | Record::VirtioUsed { sig, .. } => Some(sig.kind),
            _ => None,
        })
        .collect();
    for k in ExitKind::ALL {
        assert!(exits.contains(&k), "no sample with exit kind {k:?}");
        assert_eq!(ExitKind::from_u8(k as u8), Some(k));
    }
}

#[test]
fn round_trip_every_kind() {
    for (i, r) in samples().into_iter().enumerate() {
        let seq = [0, 1, u64::MAX, 0x0102_0304_0506_0708][i % 4];
        let f = frame(seq, &r);
        let (s, back, used) = decode(&f).expect("decodes").expect("complete");
        assert_eq!((s, used), (seq, f.len()));
        assert_eq!(back, r);
    }
}

#[test]
fn crc_is_crc32_ieee() {
    assert_eq!(checksum(b"123456789"), 0xcbf4_3926);
}

fn unhex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect()
}

/// The exact bytes of records, CRC included, as printed in docs/PROTOCOL.md.
#[test]
fn golden_bytes() {
    let hb = frame(
        3,
        &Record::Heartbeat {
            landmark: 0x0102,
            unix_ms: 0x0a0b_0c0d,
        },
    );
    let expect = unhex(
        "46 54 4c 52 1c 00 00 00 02 20 00 00 03 00 00 00 00 00 00 00
         02 01 00 00 00 00 00 00 0d 0c 0b 0a 00 00 00 00 87 61 e9 07",
    );
    assert_eq!(hb, expect);

    let irq = frame(
        0x10,
        &Record::Interrupt {
            landmark: 5,
            sig: sig(ExitKind::PioOut, 0x20, 1, 0x20),
            vector: 0x30,
        },
    );
    let expect = unhex(
        "46 54 4c 52 27 00 00 00 02 10 00 00 10 00 00 00 00 00 00 00
         05 00 00 00 00 00 00 00 02 20 00 00 00 00 00 00 00 01 20 00 00 00 00 00 00 00 30
         5c 47 fe d2",
    );
    assert_eq!(irq, expect);

    let hello = frame(
        1,
        &Record::Hello {
            vm_id: "vm".into(),
            epoch: 2,
            mem_size: 3,
        },
    );
    assert_eq!(&hello[4..8], &[32, 0, 0, 0]); // 12 + 8 + 8 + 2 + 2
    let payload = &hello[FRAME_HEADER + BODY_HEADER..hello.len() - FRAME_TRAILER];
    assert_eq!(
        payload,
        unhex("02 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00 02 00 76 6d")
    );

    let mw = frame(
        1,
        &Record::MemWrite {
            landmark: 1,
            sig: sig(ExitKind::Hlt, 0, 0, 0),
            gpa: 0x1000,
            data: vec![0xab],
        },
    );
    let payload = &mw[FRAME_HEADER + BODY_HEADER..mw.len() - FRAME_TRAILER];
    let mut expect = unhex("01 00 00 00 00 00 00 00 05");
    expect.extend_from_slice(&[0; 17]);
    expect.extend(unhex("00 10 00 00 00 00 00 00 01 00 00 00 ab"));
    assert_eq!(payload, expect);
}

/// The "payload bytes" column of docs/PROTOCOL.md, with empty variable fields.
#[test]
fn payload_sizes_match_the_doc() {
    let s = sig(ExitKind::Hlt, 0, 0, 0);
    let d = [0; 32];
    let table = [
        (
            Record::Hello {
                vm_id: String::new(),
                epoch: 0,
                mem_size: 0,
            },
            18,
        ),
        (Record::StateBegin { landmark: 0 }, 8),
        (
            Record::MemoryChunk {
                gpa: 0,
                data: Vec::new(),
            },
            12,
        ),
        (
            Record::DeviceState {
                name: String::new(),
                blob: Vec::new(),
            },
            6,
        ),
        (
            Record::StateEnd {
                landmark: 0,
                digest: d,
            },
            40,
        ),
        (Record::MemoryZero { gpa: 0, len: 0 }, 16),
        (
            Record::Interrupt {
                landmark: 0,
                sig: s,
                vector: 0,
            },
            27,
        ),
        (
            Record::ClockRead {
                landmark: 0,
                sig: s,
                ns: 0,
            },
            34,
        ),
        (
            Record::TimerTick {
                landmark: 0,
                sig: s,
            },
            26,
        ),
        (
            Record::MemWrite {
                landmark: 0,
                sig: s,
                gpa: 0,
                data: Vec::new(),
            },
            38,
        ),
        (
            Record::SerialInput {
                landmark: 0,
                sig: s,
                bytes: Vec::new(),
            },
            30,
        ),
        (
            Record::OutputDigest {
                landmark: 0,
                slot: 0,
                queue: 0,
                head: 0,
                digest: d,
            },
            46,
        ),
        (
            Record::Checkpoint {
                landmark: 0,
                sig: s,
                hash: 0,
            },
            34,
        ),
        (
            Record::VirtioUsed {
                landmark: 0,
                sig: s,
                slot: 0,
            },
            28,
        ),
        (
            Record::Heartbeat {
                landmark: 0,
                unix_ms: 0,
            },
            16,
        ),
        (Record::Ack { seq: 0 }, 8),
        (
            Record::Diverged {
                landmark: 0,
                reason: String::new(),
            },
            10,
        ),
    ];
    assert_eq!(table.len(), Kind::ALL.len());
    for (r, payload) in table {
        let f = frame(1, &r);
        assert_eq!(
            f.len(),
            FRAME_HEADER + BODY_HEADER + payload + FRAME_TRAILER,
            "{:?}",
            r.kind()
        );
        assert_eq!(f[FRAME_HEADER + 1], r.kind() as u8);
    }
    // The largest valid body, as stated under "Limits".
    let big = Record::DeviceState {
        name: "n".repeat(MAX_DEVICE_NAME),
        blob: vec![0; MAX_DATA],
    };
    assert_eq!(
        frame(1, &big).len() - FRAME_HEADER - FRAME_TRAILER,
        MAX_DATA + 82
    );
}

#[test]
fn byte_by_byte_returns_none_until_complete() {
    for r in small_samples() {
        let mut f = frame(9, &r);
        let len = f.len();
        for n in 0..len {
            assert!(
                matches!(decode(&f[..n]), Ok(None)),
                "{r:?}: prefix of {n}/{len} bytes"
            );
        }
        f.extend_from_slice(b"FTLR"); // the start of the next frame does not matter
        let (seq, back, used) = decode(&f).expect("ok").expect("complete");
        assert_eq!((seq, &back, used), (9, &r, len));
    }
}

#[test]
fn big_record_incrementally() {
    // Growing a 1 MiB frame in 4 KiB steps: None at every step, the record at the end.
    let r = Record::MemoryChunk {
        gpa: 0,
        data: vec![7; MAX_DATA],
    };
    let f = frame(1, &r);
    for n in (0..f.len()).step_by(4096) {
        assert!(matches!(decode(&f[..n]), Ok(None)));
    }
    assert_eq!(decode(&f).expect("ok").expect("complete").1, r);
}

#[test]
fn any_corrupted_byte_is_detected() {
    for r in small_samples() {
        let f = frame(5, &r);
        for pos in 0..f.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = f.clone();
                bad[pos] ^= mask;
                let res = decode(&bad);
                match pos {
                    0..=3 => assert!(
                        matches!(res, Err(RecordError::BadMagic(_))),
                        "{pos}: {res:?}"
                    ),
                    // body_len: longer -> waits for more bytes (or too large), shorter -> the CRC
                    // is read from the wrong place (or the length is below the body header).
                    4..=7 => assert!(
                        matches!(
                            res,
                            Ok(None)
                                | Err(RecordError::TooLarge(_))
                                | Err(RecordError::BadChecksum { .. })
                                | Err(RecordError::Malformed(_))
                        ),
                        "{pos}: {res:?}"
                    ),
                    _ => assert!(
                        matches!(res, Err(RecordError::BadChecksum { .. })),
                        "{pos}: {res:?}"
                    ),
                }
                // Through the reader a corrupted record is never returned either.
                let mut reader = RecordReader::starting_at(IoCursor::new(bad), 5);
                assert!(
                    reader.next().is_err(),
                    "reader accepted a corruption at {pos}"
                );
            }
        }
    }
}

#[test]
fn corrupted_length_is_caught_once_more_bytes_arrive() {
    let a = frame(1, &Record::Ack { seq: 1 });
    let mut stream = a.clone();
    stream[4] += 3; // body 3 bytes longer than it is
    assert!(matches!(decode(&stream), Ok(None)));
    stream.extend_from_slice(&frame(2, &Record::Ack { seq: 2 }));
    assert!(matches!(
        decode(&stream),
        Err(RecordError::BadChecksum { .. })
    ));
}

#[test]
fn truncated_stream_is_an_error() {
    let first = frame(
        1,
        &Record::Heartbeat {
            landmark: 1,
            unix_ms: 2,
        },
    );
    let second = frame(
        2,
        &Record::MemWrite {
            landmark: 3,
            sig: sig(ExitKind::Hlt, 0, 0, 0),
            gpa: 4,
            data: vec![9; 100],
        },
    );
    let mut all = first.clone();
    all.extend_from_slice(&second);
    for cut in first.len()..all.len() {
        let mut reader = RecordReader::new(IoCursor::new(all[..cut].to_vec()));
        assert_eq!(reader.next().expect("first").expect("present").0, 1);
        let have = cut - first.len();
        match reader.next() {
            Ok(None) => assert_eq!(have, 0, "clean EOF only between frames"),
            Err(RecordError::Truncated { need, have: h }) => {
                assert_eq!(h, have);
                assert_eq!(
                    need,
                    if have < FRAME_HEADER {
                        FRAME_HEADER
                    } else {
                        second.len()
                    }
                );
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    let mut reader = RecordReader::new(IoCursor::new(Vec::new()));
    assert!(matches!(reader.next(), Ok(None)));
}

#[test]
fn unknown_version_kind_and_flags() {
    let f = frame(1, &Record::Ack { seq: 1 });
    let body = FRAME_HEADER;
    for v in [0u8, 1, 3, 0xff] {
        let mut g = f.clone();
        g[body] = v;
        assert!(matches!(decode(&reseal(g)), Err(RecordError::UnsupportedVersion(x)) if x == v));
    }
    for k in [0u8, 0x07, 0x18, 0x21, 0x32, 0xee, 0xff] {
        let mut g = f.clone();
        g[body + 1] = k;
        assert!(
            matches!(decode(&reseal(g)), Err(RecordError::UnknownKind(x)) if x == k),
            "kind {k:#x}"
        );
    }
    // A version-3 record is refused as such even if its kind and payload mean nothing in v2.
    let mut g = f.clone();
    g[body] = 3;
    g[body + 1] = 0xee;
    assert!(matches!(
        decode(&reseal(g)),
        Err(RecordError::UnsupportedVersion(3))
    ));
    for flags in [[1u8, 0], [0, 0x80]] {
        let mut g = f.clone();
        g[body + 2..body + 4].copy_from_slice(&flags);
        assert!(matches!(decode(&reseal(g)), Err(RecordError::Malformed(_))));
    }
}

#[test]
fn malformed_payloads_are_refused() {
    // Every kind, one byte short, and one byte too long (both with a valid CRC).
    for r in small_samples() {
        let f = frame(1, &r);
        let mut short = f[..f.len() - FRAME_TRAILER - 1].to_vec();
        short.extend_from_slice(&[0; 4]);
        assert!(
            matches!(decode(&reseal(short)), Err(RecordError::Malformed(_))),
            "{r:?} short"
        );
        let mut long = f[..f.len() - FRAME_TRAILER].to_vec();
        long.extend_from_slice(&[0; 5]);
        assert!(
            matches!(decode(&reseal(long)), Err(RecordError::Malformed(_))),
            "{r:?} long"
        );
    }
    // Unknown exit kind.
    let mut b = body_header(Kind::Checkpoint as u8, 1);
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&[6; SIGNATURE_LEN]);
    assert!(matches!(
        decode(&frame_around(&b)),
        Err(RecordError::Malformed("unknown exit kind"))
    ));
    // Invalid UTF-8.
    let mut b = body_header(Kind::Diverged as u8, 1);
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&[2, 0, 0xc3, 0x28]);
    assert!(matches!(
        decode(&frame_around(&b)),
        Err(RecordError::Malformed("string is not UTF-8"))
    ));
    // A string longer than its limit, although the bytes are present.
    let mut b = body_header(Kind::Hello as u8, 1);
    b.extend_from_slice(&[0; 16]);
    b.extend_from_slice(&(u16::try_from(MAX_VM_ID).expect("limit") + 1).to_le_bytes());
    b.extend_from_slice(&[b'a'; MAX_VM_ID + 1]);
    assert!(matches!(
        decode(&frame_around(&b)),
        Err(RecordError::FieldTooLong {
            field: "vm_id",
            len: 65,
            max: MAX_VM_ID
        })
    ));
    // A data length beyond MAX_DATA, and one beyond the bytes present.
    let mut b = body_header(Kind::MemoryChunk as u8, 1);
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&(u32::try_from(MAX_DATA).expect("limit") + 1).to_le_bytes());
    assert!(matches!(
        decode(&frame_around(&b)),
        Err(RecordError::FieldTooLong { field: "data", .. })
    ));
    let mut b = body_header(Kind::MemoryChunk as u8, 1);
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&100u32.to_le_bytes());
    b.extend_from_slice(&[0; 99]);
    assert!(matches!(
        decode(&frame_around(&b)),
        Err(RecordError::Malformed(_))
    ));
    // A memory range that wraps around.
    let mut b = body_header(Kind::MemWrite as u8, 1);
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&[5; SIGNATURE_LEN]);
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&[0; 2]);
    assert!(matches!(
        decode(&frame_around(&b)),
        Err(RecordError::Malformed(_))
    ));
    // A body shorter than the body header.
    let mut g = b"FTLR".to_vec();
    g.extend_from_slice(&11u32.to_le_bytes());
    assert!(matches!(decode(&g), Err(RecordError::Malformed(_))));
}

#[test]
fn oversize_length_fails_from_the_header_alone() {
    let max = u32::try_from(MAX_RECORD).expect("limit");
    for len in [max + 1, u32::MAX] {
        let mut h = b"FTLR".to_vec();
        h.extend_from_slice(&len.to_le_bytes());
        assert!(matches!(decode(&h), Err(RecordError::TooLarge(l)) if l == len as usize));
    }
    // The cap itself is accepted: the decoder waits for the rest.
    let mut h = b"FTLR".to_vec();
    h.extend_from_slice(&u32::try_from(MAX_RECORD).expect("limit").to_le_bytes());
    assert!(matches!(decode(&h), Ok(None)));
}

/// An endless stream that counts what it hands out: the header of a 4 GiB record, then zeros.
struct Endless {
    header: Vec<u8>,
    given: usize,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(4096);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = self.header.get(self.given + i).copied().unwrap_or(0);
        }
        self.given += n;
        Ok(n)
    }
}

#[test]
fn reader_refuses_oversize_length_without_reading_it() {
    let mut header = b"FTLR".to_vec();
    header.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut reader = RecordReader::new(Endless { header, given: 0 });
    assert!(matches!(reader.next(), Err(RecordError::TooLarge(_))));
    assert!(
        reader.get_ref().given <= 4096,
        "read {} bytes",
        reader.get_ref().given
    );
    assert!(
        reader.buf.capacity() <= 8192,
        "buffer of {}",
        reader.buf.capacity()
    );
}

#[test]
fn back_to_back_in_one_buffer() {
    let records = samples();
    let mut buf = Vec::new();
    for (i, r) in records.iter().enumerate() {
        encode(i as u64 + 1, r, &mut buf).expect("valid");
    }
    let mut at = 0;
    for (i, r) in records.iter().enumerate() {
        let (seq, back, used) = decode(&buf[at..]).expect("ok").expect("complete");
        assert_eq!((seq, &back), (i as u64 + 1, r));
        at += used;
    }
    assert_eq!(at, buf.len());
    assert!(matches!(decode(&buf[at..]), Ok(None)));

    let mut reader = RecordReader::new(IoCursor::new(buf));
    for (i, r) in records.iter().enumerate() {
        assert_eq!(reader.next().expect("ok"), Some((i as u64 + 1, r.clone())));
        assert_eq!(reader.last_seq(), i as u64 + 1);
    }
    assert!(matches!(reader.next(), Ok(None)));
}

#[test]
fn writer_numbers_records_and_refuses_invalid_ones() {
    let mut w = RecordWriter::new(Vec::new());
    assert_eq!(w.last_seq(), 0);
    let records = small_samples();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(w.write(r).expect("valid"), i as u64 + 1);
        if i == 2 {
            let before = w.get_ref().len();
            let bad = Record::Hello {
                vm_id: "v".repeat(MAX_VM_ID + 1),
                epoch: 0,
                mem_size: 0,
            };
            assert!(matches!(
                w.write(&bad),
                Err(RecordError::FieldTooLong { .. })
            ));
            assert_eq!(w.get_ref().len(), before, "nothing written");
        }
    }
    w.flush().expect("flush");
    assert_eq!(w.last_seq(), records.len() as u64);
    let mut reader = RecordReader::new(IoCursor::new(w.into_inner()));
    for (i, r) in records.iter().enumerate() {
        assert_eq!(reader.next().expect("ok"), Some((i as u64 + 1, r.clone())));
    }
    assert!(matches!(reader.next(), Ok(None)));
}

#[test]
fn encode_refuses_what_decode_would_refuse() {
    let s = sig(ExitKind::Hlt, 0, 0, 0);
    let bad = [
        Record::Hello {
            vm_id: "v".repeat(MAX_VM_ID + 1),
            epoch: 0,
            mem_size: 0,
        },
        Record::MemoryChunk {
            gpa: 0,
            data: vec![0; MAX_DATA + 1],
        },
        Record::MemoryChunk {
            gpa: u64::MAX,
            data: vec![0; 1],
        },
        Record::MemWrite {
            landmark: 0,
            sig: s,
            gpa: 0,
            data: vec![0; MAX_DATA + 1],
        },
        Record::MemWrite {
            landmark: 0,
            sig: s,
            gpa: u64::MAX - 1,
            data: vec![0; 2],
        },
        Record::DeviceState {
            name: "n".repeat(MAX_DEVICE_NAME + 1),
            blob: Vec::new(),
        },
        Record::DeviceState {
            name: String::new(),
            blob: vec![0; MAX_DATA + 1],
        },
        Record::Diverged {
            landmark: 0,
            reason: "r".repeat(MAX_REASON + 1),
        },
    ];
    for r in bad {
        let mut out = vec![0xaa];
        assert!(encode(1, &r, &mut out).is_err(), "{:?} accepted", r.kind());
        assert_eq!(out, [0xaa], "output untouched");
    }
}

#[test]
fn reader_checks_sequence() {
    let mut buf = frame(1, &Record::Ack { seq: 0 });
    buf.extend_from_slice(&frame(3, &Record::Ack { seq: 0 }));
    let mut reader = RecordReader::new(IoCursor::new(buf));
    assert!(matches!(reader.next(), Ok(Some((1, _)))));
    assert!(matches!(
        reader.next(),
        Err(RecordError::Sequence {
            expected: 2,
            got: 3
        })
    ));
    let mut reader = RecordReader::new(IoCursor::new(frame(0, &Record::Ack { seq: 0 })));
    assert!(matches!(
        reader.next(),
        Err(RecordError::Sequence {
            expected: 1,
            got: 0
        })
    ));
}

/// Hands out its bytes a few at a time, with a WouldBlock (a socket read timeout) and an
/// Interrupted between every two reads.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    step: usize,
    tick: u8,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tick = (self.tick + 1) % 3;
        match self.tick {
            1 => Err(io::ErrorKind::WouldBlock.into()),
            2 => Err(io::ErrorKind::Interrupted.into()),
            _ => {
                let n = buf.len().min(self.step).min(self.data.len() - self.at);
                buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
                self.at += n;
                Ok(n)
            }
        }
    }
}

#[test]
fn reader_resumes_after_would_block() {
    let records = samples();
    let mut data = Vec::new();
    for (i, r) in records.iter().enumerate() {
        encode(i as u64 + 1, r, &mut data).expect("valid");
    }
    for step in [1usize, 7, 100_003] {
        let mut reader = RecordReader::new(Trickle {
            data: data.clone(),
            at: 0,
            step,
            tick: 0,
        });
        let mut got = Vec::new();
        let mut would_block = 0;
        loop {
            match reader.next() {
                Ok(Some((seq, r))) => got.push((seq, r)),
                Ok(None) => break,
                Err(RecordError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    would_block += 1
                }
                Err(e) => panic!("step {step}: {e}"),
            }
            if step == 1 && got.len() == 12 {
                break; // byte by byte through the megabyte records would be slow; enough
            }
        }
        assert!(would_block > 0);
        assert_eq!(got.len(), if step == 1 { 12 } else { records.len() });
        for (i, (seq, r)) in got.iter().enumerate() {
            assert_eq!((*seq, r), (i as u64 + 1, &records[i]));
        }
    }
}

#[test]
fn entry_landmark() {
    for r in samples() {
        let is_entry = matches!(r.kind() as u8, 0x10..=0x17);
        assert_eq!(r.entry_landmark().is_some(), is_entry, "{:?}", r.kind());
    }
    let s = sig(ExitKind::Hlt, 0, 0, 0);
    assert_eq!(
        Record::Checkpoint {
            landmark: 77,
            sig: s,
            hash: 0
        }
        .entry_landmark(),
        Some(77)
    );
}

#[test]
fn a_zero_range_that_wraps_is_refused_both_ways() {
    let r = Record::MemoryZero {
        gpa: u64::MAX - 10,
        len: 4096,
    };
    let mut out = Vec::new();
    assert!(matches!(
        encode(1, &r, &mut out),
        Err(RecordError::Malformed(_))
    ));
    let mut b = body_header(Kind::MemoryZero as u8, 1);
    b.extend_from_slice(&(u64::MAX - 10).to_le_bytes());
    b.extend_from_slice(&4096u64.to_le_bytes());
    assert!(matches!(
        decode(&frame_around(&b)),
        Err(RecordError::Malformed(_))
    ));
}

#[test]
fn a_version_1_peer_gets_a_clear_error() {
    let mut f = frame(1, &Record::Ack { seq: 1 });
    f[FRAME_HEADER] = 1;
    let f = reseal(f);
    let err = decode(&f).expect_err("version 1 is refused");
    assert!(matches!(err, RecordError::UnsupportedVersion(1)));
    assert_eq!(
        err.to_string(),
        "unsupported record version 1 (this side speaks version 2)"
    );
}
