//! The engine without KVM: a scripted run is recorded, replayed on a second engine, and the
//! traces and machines compared; each kind of divergence must be caught where it happens.

use sha2::{Digest, Sha256};

use super::fake::*;
use super::input::EntryError;
use super::recorder::NoBackup;
use super::*;
use crate::ft::record::Record;

fn replayer(records: Vec<Record>) -> Replayer<VecLog> {
    Replayer::new(VecLog::closed(records), Trace::default())
}

/// Replays `records` against `script`; returns the stop, the trace and the machine.
fn replay(records: Vec<Record>, script: &[Landmark]) -> (EngineStop, Trace, FakeMachine) {
    let mut rep = replayer(records);
    let mut m = FakeMachine::new();
    let stop = replay_into(&mut rep, &mut m, script);
    (stop, rep.trace, m)
}

fn diverged_at(stop: &EngineStop) -> (u64, &str) {
    match stop {
        EngineStop::Diverged { landmark, reason } => (*landmark, reason.as_str()),
        other => panic!("expected a divergence, got {other:?}"),
    }
}

/// The index of the first record at `landmark` satisfying `pick`.
fn find(records: &[Record], pick: impl Fn(&Entry) -> bool) -> usize {
    records
        .iter()
        .position(|r| Entry::from_record(r.clone()).is_ok_and(|e| pick(&e)))
        .expect("no such record")
}

#[test]
fn a_replayed_run_reaches_the_same_trace_and_machine() {
    let s = script(120);
    let (records, trace, primary) = record(&s);
    assert!(records.len() > 60, "{} records", records.len());
    let (stop, backup_trace, backup) = replay(records, &s);
    assert_eq!(stop, EngineStop::PrimaryLost { landmark: 120 });
    assert_eq!(backup_trace, trace);
    assert_eq!(backup, primary);
    assert!(!primary.injected.is_empty() && !primary.serial.is_empty());
}

#[test]
fn a_different_exit_at_a_quiet_landmark_is_caught_by_the_next_checkpoint() {
    let s = script(60);
    let (records, ..) = record(&s);
    let mut other = s.clone();
    other[26].sig = pio(0x70, 1); // landmark 27 has no entry of its own
    let (stop, ..) = replay(records, &other);
    let (landmark, reason) = diverged_at(&stop);
    // Later entries carry only their own exit's signature; the running hash in the next
    // checkpoint (here the one forced at the end) covers every landmark.
    assert_eq!(landmark, 60, "{reason}");
    assert!(reason.contains("running hash"), "{reason}");
}

#[test]
fn a_different_exit_with_an_entry_is_caught_by_its_signature() {
    let s = script(30);
    let (records, ..) = record(&s);
    let mut other = s.clone();
    other[14].sig = pio(0x70, 1); // landmark 15 has serial input (15 % 7 == 1)
    let (stop, ..) = replay(records, &other);
    let (landmark, reason) = diverged_at(&stop);
    assert_eq!(landmark, 15, "{reason}");
    assert!(reason.contains("expected"), "{reason}");
}

#[test]
fn a_wrong_vector_is_caught() {
    let s = script(40);
    let (mut records, ..) = record(&s);
    let i = find(&records, |e| matches!(e.input, Input::Interrupt { .. }));
    let landmark = records[i].entry_landmark().expect("an entry");
    if let Record::Interrupt { vector, .. } = &mut records[i] {
        *vector = 0x99;
    }
    let (stop, ..) = replay(records, &s);
    let (at, reason) = diverged_at(&stop);
    assert_eq!(at, landmark);
    assert!(
        reason.contains("expected interrupt vector 0x99"),
        "{reason}"
    );
}

#[test]
fn a_wrong_output_digest_is_caught() {
    let s = script(40);
    let (mut records, ..) = record(&s);
    let i = find(&records, |e| matches!(e.input, Input::Output { .. }));
    let landmark = records[i].entry_landmark().expect("an entry");
    if let Record::OutputDigest { digest, .. } = &mut records[i] {
        digest[0] ^= 1;
    }
    let (stop, ..) = replay(records, &s);
    let (at, reason) = diverged_at(&stop);
    assert_eq!(at, landmark);
    assert!(reason.contains("differs"), "{reason}");
}

#[test]
fn output_bytes_that_differ_on_the_backup_are_caught() {
    let s = script(20);
    let (records, ..) = record(&s);
    let mut other = s.clone();
    // Landmark 3 queues an output; the backup's guest queued other bytes.
    other[2].events = vec![Event::Output {
        slot: 1,
        head: 3,
        bytes: b"something else".to_vec(),
    }];
    let (stop, ..) = replay(records, &other);
    assert_eq!(diverged_at(&stop).0, 3);
}

#[test]
fn a_wrong_checkpoint_hash_is_caught() {
    let s = script(20);
    let (mut records, ..) = record(&s);
    let i = find(&records, |e| matches!(e.input, Input::Checkpoint { .. }));
    if let Record::Checkpoint { hash, .. } = &mut records[i] {
        *hash ^= 1;
    }
    let (stop, ..) = replay(records, &s);
    assert!(diverged_at(&stop).1.contains("running hash"));
}

fn without_checkpoints(records: &[Record]) -> Vec<Record> {
    records
        .iter()
        .filter(|r| {
            !matches!(
                Entry::from_record((*r).clone()),
                Ok(Entry {
                    input: Input::Checkpoint { .. },
                    ..
                })
            )
        })
        .cloned()
        .collect()
}

#[test]
fn go_live_in_the_middle_continues_the_trace() {
    let s = script(100);
    let (records, trace, primary) = record(&s);
    // The primary dies after logging landmark 60: the backup has the log up to there.
    let cut = find(&records, |e| e.landmark > 60);
    let mut rep = replayer(records[..cut].to_vec());
    let mut m = FakeMachine::new();
    let stop = replay_into(&mut rep, &mut m, &s);
    assert_eq!(stop, EngineStop::PrimaryLost { landmark: 60 });
    // The survivor records from the replayer's trace on, and logs what the primary logged.
    let mut live = Recorder::new(VecSink::default(), rep.trace);
    record_into(&mut live, &mut m, &s[60..]);
    assert_eq!(live.trace, trace, "the trace goes on as the primary's did");
    assert_eq!(m, primary);
    assert_eq!(
        without_checkpoints(&live.sink.records),
        without_checkpoints(&records[cut..])
    );
}

#[test]
fn a_truncated_log_stops_where_it_ends() {
    let s = script(50);
    let (records, ..) = record(&s);
    let cut = find(&records, |e| e.landmark > 20);
    let (stop, trace, _) = replay(records[..cut].to_vec(), &s);
    // The backup cannot know that landmark 20 is complete: it stops there.
    assert_eq!(stop, EngineStop::PrimaryLost { landmark: 20 });
    assert_eq!(trace.landmark, 20);
}

#[test]
fn a_reordered_log_is_refused() {
    let s = script(30);
    let (mut records, ..) = record(&s);
    let a = find(&records, |e| e.landmark == 8);
    let b = find(&records, |e| e.landmark == 9);
    records.swap(a, b);
    let (stop, ..) = replay(records, &s);
    let (landmark, reason) = diverged_at(&stop);
    assert_eq!(landmark, 9);
    assert!(reason.contains("past landmark 8"), "{reason}");
}

#[test]
fn the_backup_sees_the_primarys_clock() {
    let s = script(12);
    let (records, ..) = record(&s);
    let mut rep = replayer(records);
    let mut m = FakeMachine::new();
    replay_into(&mut rep, &mut m, &s);
    assert_eq!(
        rep.last_clock_ns, 10_000,
        "landmark 10 read the clock at 10 us"
    );
}

#[test]
fn a_pit_access_on_the_backup_only_is_caught() {
    let s = script(12);
    let (records, ..) = record(&s);
    let mut other = s.clone();
    other[2].clock = Some(1); // landmark 3 reads the PIT on the backup only
    let (stop, ..) = replay(records, &other);
    let (landmark, reason) = diverged_at(&stop);
    assert_eq!(landmark, 3);
    assert!(reason.contains("no logged time"), "{reason}");
}

#[test]
fn a_pit_access_on_the_primary_only_is_caught() {
    let s = script(12);
    let (records, ..) = record(&s);
    let mut other = s.clone();
    other[4].clock = None; // landmark 5 read the PIT on the primary
    let (stop, ..) = replay(records, &other);
    let (landmark, reason) = diverged_at(&stop);
    assert_eq!(landmark, 5);
    assert!(
        reason.contains("PIT access on the primary only"),
        "{reason}"
    );
}

#[test]
fn a_backup_left_halted_is_caught() {
    let quiet: Vec<Landmark> = (1..=3)
        .map(|i| Landmark {
            sig: pio(0x80, i),
            clock: None,
            events: vec![],
        })
        .collect();
    let (records, ..) = record(&quiet);
    let mut other = quiet.clone();
    other[1].events.push(Event::Halt); // the backup halts at 2, the primary did not
    let (stop, ..) = replay(records, &other);
    let (landmark, reason) = diverged_at(&stop);
    assert_eq!(landmark, 2);
    assert!(reason.contains("injected no interrupt"), "{reason}");
}

#[test]
fn the_backup_waits_until_a_later_entry_arrives() {
    let s = script(3);
    let (records, ..) = record(&s);
    let mut rep = Replayer::new(VecLog::default(), Trace::default());
    let mut m = FakeMachine::new();
    rep.trace.exit(s[0].sig);
    rep.log.records.extend(records.iter().take(1).cloned());
    guest_effects(&mut m, &s[0]);
    assert_eq!(rep.replay(&mut m), Ok(Replayed::NeedLog));
    let later = find(&records, |e| e.landmark > 1);
    rep.log.records.extend(records[1..=later].iter().cloned());
    assert_eq!(rep.replay(&mut m), Ok(Replayed::Done));
}

#[test]
fn records_that_are_not_entries_are_skipped() {
    let s = script(20);
    let (records, trace, _) = record(&s);
    let mut mixed = Vec::new();
    for r in records {
        mixed.push(Record::Heartbeat {
            landmark: 0,
            unix_ms: 1,
        });
        mixed.push(r);
    }
    let (stop, got, _) = replay(mixed, &s);
    assert_eq!(stop, EngineStop::PrimaryLost { landmark: 20 });
    assert_eq!(got, trace);
}

#[test]
fn a_divergence_is_reported_to_the_primary() {
    let s = script(20);
    let (records, ..) = record(&s);
    let mut other = s.clone();
    other[14].sig = pio(0x70, 1);
    let mut rep = replayer(records);
    replay_into(&mut rep, &mut FakeMachine::new(), &other);
    let reports = rep.log.reports.borrow();
    assert!(
        matches!(&reports[..], [Record::Diverged { landmark: 15, .. }]),
        "{reports:?}"
    );
}

#[test]
fn a_completion_is_logged_as_its_writes_then_the_used_signal() {
    let mut rec = Recorder::new(VecSink::default(), Trace::default());
    let mut m = FakeMachine::new();
    rec.trace.exit(pio(0x3f8, 0));
    let writes = vec![crate::devices::virtio::ring::Written {
        gpa: 0x2000,
        data: vec![7; 4],
    }];
    rec.completion(&mut m, 1, (0, 5, 4), writes)
        .expect("applied");
    let inputs: Vec<Input> = rec
        .sink
        .records
        .iter()
        .map(|r| Entry::from_record(r.clone()).expect("entry").input)
        .collect();
    assert!(matches!(
        &inputs[..],
        [
            Input::MemWrite { gpa: 0x2000, .. },
            Input::MemWrite { gpa: 0x8100, .. },
            Input::VirtioUsed { slot: 1 }
        ]
    ));
    // Pre-copy is told of both writes (KVM's dirty log does not see them).
    assert_eq!(*rec.sink.dirty.borrow(), vec![(0x2000, 4), (0x8100, 8)]);
}

#[test]
fn a_vm_without_ft_applies_inputs_and_logs_nothing() {
    let mut plain = Recorder::new(NoBackup, Trace::default());
    let mut m = FakeMachine::new();
    plain.trace.exit(pio(0x40, 0));
    assert_eq!(plain.clock_read(42), 42);
    plain.serial_input(&mut m, b"hi");
    plain.timer_tick(&mut m, std::time::Instant::now());
    assert!(matches!(plain.before_run(&mut m), Ok(Step::Run)));
    assert_eq!(m.serial, b"hi");
    assert_eq!(m.injected, vec![VEC_SERIAL]);
    assert_eq!(plain.trace.landmark, 1);
}

#[test]
fn every_input_survives_its_record() {
    let sig = pio(0x61, 3);
    let at = OutputAt {
        slot: 15,
        queue: 15,
        head: 255,
    };
    let inputs = [
        Input::ClockRead { ns: u64::MAX },
        Input::TimerTick,
        Input::SerialInput(vec![0xff, 0, 1]),
        Input::MemWrite {
            gpa: 0x1234,
            data: vec![1, 2, 3],
        },
        Input::VirtioUsed { slot: 3 },
        Input::Interrupt { vector: 0x30 },
        Input::Output {
            at,
            digest: Sha256::digest(b"x").into(),
        },
        Input::Checkpoint { hash: 0xdead },
    ];
    for input in inputs {
        let sig = (!matches!(input, Input::Output { .. })).then_some(sig);
        let entry = Entry {
            landmark: 9,
            sig,
            input,
        };
        let back = Entry::from_record(entry.to_record().expect("encodes")).expect("decodes");
        assert_eq!(back, entry);
    }
}

#[test]
fn outputs_of_large_queues_keep_their_location() {
    // Protocol v1 packed (slot, queue, head) into 16 bits: chain 256 became chain 0.
    let at = OutputAt {
        slot: 3,
        queue: 1,
        head: 32767,
    };
    let entry = Entry {
        landmark: 1,
        sig: None,
        input: Input::Output {
            at,
            digest: [0; 32],
        },
    };
    let back = Entry::from_record(entry.to_record().expect("encodes")).expect("decodes");
    assert_eq!(back, entry);
    let too_long = Entry {
        landmark: 1,
        sig: None,
        input: Input::SerialInput(vec![0; crate::ft::record::MAX_SERIAL + 1]),
    };
    assert!(matches!(
        too_long.to_record(),
        Err(EntryError::SerialInput(_))
    ));
}

#[test]
fn an_output_on_a_device_the_backup_lacks_is_caught() {
    let s = script(5);
    let (mut records, ..) = record(&s);
    let i = find(&records, |e| matches!(e.input, Input::Output { .. }));
    if let Record::OutputDigest { slot, .. } = &mut records[i] {
        *slot = 9;
    }
    let (stop, ..) = replay(records, &s);
    let (landmark, reason) = diverged_at(&stop);
    assert_eq!(landmark, 3);
    assert!(reason.contains("no virtio device in slot 9"), "{reason}");
}

#[test]
fn a_record_that_is_not_an_entry_is_not_taken_for_one() {
    let hello = Record::Hello {
        vm_id: "vm".into(),
        epoch: 1,
        mem_size: 1,
    };
    assert!(matches!(
        Entry::from_record(hello),
        Err(EntryError::NotAnEntry(crate::ft::record::Kind::Hello))
    ));
}
