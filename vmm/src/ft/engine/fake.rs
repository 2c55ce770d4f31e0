//! Fakes for the engine's unit tests: a machine without KVM, a log in memory, and a script
//! of landmarks that a recorder and a replayer both run through.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::*;
use crate::devices::virtio::ring::Written;
use crate::ft::record::{ExitKind, ExitSignature, Record};

/// Vectors the fake PIC gives: the timer, the UART, virtio slot n.
pub const VEC_TIMER: u8 = 0x20;
pub const VEC_SERIAL: u8 = 0x24;
pub const VEC_VIRTIO: u8 = 0x25;

/// A machine whose devices are plain data. Inputs raise vectors the way the PIC would, so
/// that two copies given the same inputs make the same interrupt decisions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FakeMachine {
    pub memory: BTreeMap<u64, Vec<u8>>,
    pub serial: Vec<u8>,
    pub pending: VecDeque<u8>,
    pub injected: Vec<u8>,
    /// The vCPU can take an interrupt (IF set, ready for injection).
    pub can_take: bool,
    pub halted: bool,
    /// The bytes of each output chain the guest has queued.
    pub chains: BTreeMap<(usize, u16, u16), Vec<u8>>,
    pub live_clock: Option<u64>,
}

pub const SLOTS: usize = 2;

impl FakeMachine {
    pub fn new() -> Self {
        FakeMachine {
            can_take: true,
            ..Default::default()
        }
    }
}

impl Machine for FakeMachine {
    fn pulse_timer(&mut self, _at: Instant) {
        self.pending.push_back(VEC_TIMER);
    }

    fn serial_input(&mut self, bytes: &[u8]) {
        self.serial.extend_from_slice(bytes);
        // A level: the UART's line is up while its FIFO holds data, however many bytes.
        if !self.pending.contains(&VEC_SERIAL) {
            self.pending.push_back(VEC_SERIAL);
        }
    }

    fn write_memory(&mut self, gpa: u64, data: &[u8]) -> Result<(), MachineError> {
        if gpa >= 1 << 20 {
            return Err(MachineError::Memory {
                gpa,
                reason: "outside the fake's 1 MiB".into(),
            });
        }
        self.memory.insert(gpa, data.to_vec());
        Ok(())
    }

    fn virtio_used(&mut self, slot: usize) -> Result<(), MachineError> {
        if slot >= SLOTS {
            return Err(MachineError::NoDevice(slot));
        }
        self.pending
            .push_back(VEC_VIRTIO + u8::try_from(slot).expect("a few slots"));
        Ok(())
    }

    fn complete(
        &mut self,
        slot: usize,
        _queue: u16,
        head: u16,
        len: u32,
        writes: Vec<Written>,
        wrote: &mut Vec<Written>,
    ) -> Result<(), MachineError> {
        for w in writes {
            self.write_memory(w.gpa, &w.data)?;
            wrote.push(w);
        }
        // The used element: (head, len) at the slot's used ring.
        let used = Written {
            gpa: 0x8000 + slot as u64 * 0x100,
            data: [u32::from(head).to_le_bytes(), len.to_le_bytes()].concat(),
        };
        self.write_memory(used.gpa, &used.data)?;
        wrote.push(used);
        Ok(())
    }

    fn inject_pending(&mut self) -> Result<Option<u8>, MachineError> {
        if !self.can_take {
            return Ok(None);
        }
        let v = self.pending.pop_front();
        if let Some(v) = v {
            self.injected.push(v);
            self.halted = false;
        }
        Ok(v)
    }

    fn inject_logged(&mut self, vector: u8) -> Result<(), MachineError> {
        let ready = self.can_take && !self.pending.is_empty();
        match self.pending.pop_front() {
            Some(v) if ready && v == vector => {
                self.injected.push(v);
                self.halted = false;
                Ok(())
            }
            got => Err(MachineError::Vector {
                expected: vector,
                got,
                ready,
            }),
        }
    }

    fn output_digest(&self, at: OutputAt) -> Result<[u8; 32], MachineError> {
        let bytes = self
            .chains
            .get(&(at.slot, at.queue, at.head))
            .ok_or(MachineError::NoDevice(at.slot))?;
        Ok(Sha256::digest(bytes).into())
    }

    fn halted(&self) -> bool {
        self.halted
    }

    fn go_live(&mut self, clock_ns: u64) -> Result<(), MachineError> {
        self.live_clock = Some(clock_ns);
        Ok(())
    }
}

/// A log in memory. `closed`: nothing more will come once it is empty.
#[derive(Default)]
pub struct VecLog {
    pub records: VecDeque<Record>,
    pub closed: bool,
    pub reports: RefCell<Vec<Record>>,
}

impl VecLog {
    pub fn closed(records: Vec<Record>) -> Self {
        VecLog {
            records: records.into(),
            closed: true,
            ..Default::default()
        }
    }
}

impl LogSource for VecLog {
    fn peek(&self) -> Peek {
        match self.records.front() {
            None if self.closed => Peek::Closed,
            None => Peek::Empty,
            Some(r) => r.entry_landmark().map_or(Peek::Other, Peek::Entry),
        }
    }

    fn pop(&mut self) -> Option<Record> {
        self.records.pop_front()
    }

    fn wait(&self) {
        assert!(
            self.closed || !self.records.is_empty(),
            "the replayer would wait forever on an open, empty test log"
        );
    }

    fn report(&self, record: &Record) {
        self.reports.borrow_mut().push(record.clone());
    }
}

/// A recorder's sink that keeps what it is given.
#[derive(Default)]
pub struct VecSink {
    pub records: Vec<Record>,
    pub outputs: Vec<(usize, u64)>,
    pub dirty: RefCell<Vec<(u64, usize)>>,
}

impl LogSink for VecSink {
    fn connected(&self) -> bool {
        true
    }

    fn send(&mut self, _landmark: u64, record: Record) -> bool {
        self.records.push(record);
        true
    }

    fn send_output(&mut self, _landmark: u64, record: Record, slot: usize, id: u64) -> bool {
        self.records.push(record);
        self.outputs.push((slot, id));
        true
    }

    fn wrote(&self, gpa: u64, len: usize) {
        self.dirty.borrow_mut().push((gpa, len));
    }
}

/// What happens at one landmark of a script.
#[derive(Clone, Debug)]
pub enum Event {
    Tick,
    Serial(Vec<u8>),
    Complete {
        slot: usize,
        head: u16,
        data: Vec<u8>,
    },
    Output {
        slot: usize,
        head: u16,
        bytes: Vec<u8>,
    },
    /// The guest clears or sets IF (both copies alike: it is the guest's doing).
    Interruptible(bool),
    Halt,
}

#[derive(Clone, Debug)]
pub struct Landmark {
    pub sig: ExitSignature,
    /// A PIT access: the clock the primary read.
    pub clock: Option<u64>,
    pub events: Vec<Event>,
}

pub fn pio(port: u64, data: u64) -> ExitSignature {
    ExitSignature {
        kind: ExitKind::PioOut,
        addr: port,
        size: 1,
        data,
    }
}

/// A script that uses every kind of input: n landmarks.
pub fn script(n: u64) -> Vec<Landmark> {
    (1..=n)
        .map(|i| {
            let mut events = Vec::new();
            match i % 7 {
                0 => events.push(Event::Tick),
                1 => events.push(Event::Serial(vec![b'a' + (i % 26) as u8, b'!'])),
                2 => events.push(Event::Complete {
                    slot: (i % 2) as usize,
                    head: (i % 200) as u16,
                    data: vec![i.to_le_bytes()[0]; 5],
                }),
                3 => events.push(Event::Output {
                    slot: 1,
                    head: (i % 250) as u16,
                    bytes: format!("reply {i}").into_bytes(),
                }),
                4 => events.push(Event::Interruptible(false)),
                5 => events.push(Event::Interruptible(true)),
                _ => {}
            }
            if i % 11 == 0 {
                events.push(Event::Halt);
                events.push(Event::Tick);
            }
            Landmark {
                sig: pio(0x3f8 + (i % 3), i),
                clock: (i % 5 == 0).then_some(i * 1_000),
                events,
            }
        })
        .collect()
}

/// The guest's own doing at a landmark, the same on both copies.
pub fn guest_effects(m: &mut FakeMachine, l: &Landmark) {
    for e in &l.events {
        match e {
            Event::Output { slot, head, bytes } => {
                m.chains.insert((*slot, 0, *head), bytes.clone());
            }
            Event::Interruptible(on) => m.can_take = *on,
            // `sti; hlt`: a halt the next interrupt ends.
            Event::Halt => {
                m.halted = true;
                m.can_take = true;
            }
            _ => {}
        }
    }
}

/// Runs `script` on a recorder the way the vCPU thread does.
pub fn record_into<S: LogSink>(rec: &mut Recorder<S>, m: &mut FakeMachine, script: &[Landmark]) {
    for l in script {
        rec.trace.exit(l.sig);
        if let Some(ns) = l.clock {
            rec.clock_read(ns);
        }
        guest_effects(m, l);
        for e in &l.events {
            match e {
                Event::Tick => rec.timer_tick(m, Instant::now()),
                Event::Serial(b) => rec.serial_input(m, b),
                Event::Complete { slot, head, data } => {
                    let writes = vec![Written {
                        gpa: 0x1000 + u64::from(*head) * 8,
                        data: data.clone(),
                    }];
                    rec.completion(
                        m,
                        *slot,
                        (0, *head, u32::try_from(data.len()).expect("short")),
                        writes,
                    )
                    .expect("completion");
                }
                Event::Output { slot, head, bytes } => {
                    let digest = Sha256::digest(bytes).into();
                    let at = OutputAt {
                        slot: *slot,
                        queue: 0,
                        head: *head,
                    };
                    rec.output(at, u64::from(*head), digest);
                }
                _ => {}
            }
        }
        assert!(matches!(rec.before_run(m), Ok(Step::Run)));
    }
    rec.sync();
}

pub fn record(script: &[Landmark]) -> (Vec<Record>, Trace, FakeMachine) {
    let mut rec = Recorder::new(VecSink::default(), Trace::default());
    let mut m = FakeMachine::new();
    record_into(&mut rec, &mut m, script);
    (rec.sink.records, rec.trace, m)
}

/// Replays `script`'s exits against `log`. Returns the stop (a closed log ends with
/// `PrimaryLost` at the last landmark the log covered).
pub fn replay_into(
    rep: &mut Replayer<VecLog>,
    m: &mut FakeMachine,
    script: &[Landmark],
) -> EngineStop {
    for l in script {
        rep.trace.exit(l.sig);
        if l.clock.is_some() {
            if let Err(stop) = rep.clock_read() {
                return stop;
            }
        }
        guest_effects(m, l);
        match rep.replay(m) {
            Ok(Replayed::Done) => {}
            Ok(Replayed::NeedLog) => panic!("a closed log never needs more"),
            Err(stop) => return stop,
        }
    }
    panic!("the script ended before the log")
}
