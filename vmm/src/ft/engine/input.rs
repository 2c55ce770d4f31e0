//! The typed inputs and their log entries, and the one place where they map to records of the
//! logging channel (protocol version 1, docs/PROTOCOL.md). Version 1 carries most inputs as
//! `DeviceEvent {device, event, arg}` with the numbers below; nothing else in the VMM knows
//! them.

use crate::ft::record::{ExitSignature, Record};

/// `DeviceEvent.device` numbers (v1). Virtio devices use their slot number.
const DEV_PIT: u16 = 0xff00;
const DEV_SERIAL: u16 = 0xff01;
const DEV_SIGNATURES: u16 = 0xff02;
/// `DeviceEvent.event` numbers (v1).
const EV_PIT_TICK: u16 = 1;
const EV_PIT_CLOCK: u16 = 2;
const EV_SERIAL_INPUT: u16 = 3;
const EV_VIRTIO_USED: u16 = 4;
const EV_SIGNATURE_HASH: u16 = 5;

/// Where an output waits in the guest: the chain `head` of `queue` of virtio device `slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputAt {
    pub slot: usize,
    pub queue: u16,
    pub head: u16,
}

impl OutputAt {
    /// v1 packs the location into 16 bits: slot < 16, queue < 16, head < 256.
    fn pack(self) -> Option<u16> {
        (self.slot < 16 && self.queue < 16 && self.head < 256)
            .then_some(((self.slot as u16) << 12) | (self.queue << 8) | self.head)
    }

    fn unpack(packed: u16) -> Self {
        OutputAt {
            slot: usize::from(packed >> 12),
            queue: (packed >> 8) & 0xf,
            head: packed & 0xff,
        }
    }
}

/// Every non-deterministic input (the determinism contract is in the module above).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The VM clock in ns, as read by a PIT access (ports 0x40-0x43, 0x61) at this exit.
    ClockRead { ns: u64 },
    /// PIT channel 0 expired: IRQ 0 pulsed (several expirations coalesce into one edge, as
    /// a real 8259A latches one request per line).
    TimerTick,
    /// A byte typed on the console, queued in the UART's receive FIFO.
    SerialByte(u8),
    /// Bytes the VMM wrote into guest memory for a completion: the backend's data, then the
    /// used element and index (KVM's dirty log never sees these writes).
    MemWrite { gpa: u64, data: Vec<u8> },
    /// Virtio device `slot` has used buffers: its interrupt is raised (virtio 1.2, 4.2.3.4).
    VirtioUsed { slot: usize },
    /// The vector the PIC delivered and KVM_INTERRUPT queued.
    Interrupt { vector: u8 },
    /// An output the guest asked to send, and the SHA-256 of its bytes. The primary releases
    /// it only once the backup has the log up to here; the backup compares its own.
    Output { at: OutputAt, digest: [u8; 32] },
    /// No input: the running hash of every signature so far. It lets the backup pass a quiet
    /// stretch of landmarks, checking each of them.
    Checkpoint { hash: u64 },
}

/// An input at a landmark: one log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub landmark: u64,
    /// The signature of the landmark's exit (v1 sends none with an output).
    pub sig: Option<ExitSignature>,
    pub input: Input,
}

/// An entry that version 1 of the logging channel cannot carry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(
        "output location {0:?} does not fit protocol v1 (slot < 16, queue < 16, chain head < 256)"
    )]
    OutputLocation(OutputAt),
    #[error("virtio slot {0} does not fit protocol v1")]
    Slot(usize),
    #[error("record kind {0:?} is not a landmark entry this version sends")]
    NotAnEntry(crate::ft::record::Kind),
    #[error("device event {device:#x}/{event} is not an input")]
    UnknownEvent { device: u16, event: u16 },
}

impl Entry {
    /// The record that carries this entry (v1).
    pub fn to_record(&self) -> Result<Record, EntryError> {
        let landmark = self.landmark;
        let sig = self.sig.unwrap_or(crate::ft::signature::hlt_sig());
        let event = |device, event, arg| Record::DeviceEvent {
            landmark,
            sig,
            device,
            event,
            arg,
        };
        Ok(match &self.input {
            Input::ClockRead { ns } => event(DEV_PIT, EV_PIT_CLOCK, *ns),
            Input::TimerTick => event(DEV_PIT, EV_PIT_TICK, 0),
            Input::SerialByte(b) => event(DEV_SERIAL, EV_SERIAL_INPUT, u64::from(*b)),
            Input::VirtioUsed { slot } => match u16::try_from(*slot) {
                Ok(n) if n < DEV_PIT => event(n, EV_VIRTIO_USED, 0),
                _ => return Err(EntryError::Slot(*slot)),
            },
            Input::Checkpoint { hash } => event(DEV_SIGNATURES, EV_SIGNATURE_HASH, *hash),
            Input::MemWrite { gpa, data } => Record::MemWrite {
                landmark,
                sig,
                gpa: *gpa,
                data: data.clone(),
            },
            Input::Interrupt { vector } => Record::Interrupt {
                landmark,
                sig,
                vector: *vector,
            },
            Input::Output { at, digest } => Record::OutputDigest {
                landmark,
                device: at.pack().ok_or(EntryError::OutputLocation(*at))?,
                digest: *digest,
            },
        })
    }

    /// The entry a landmark record carries (v1).
    pub fn from_record(record: Record) -> Result<Entry, EntryError> {
        let entry = |landmark, sig, input| Entry {
            landmark,
            sig: Some(sig),
            input,
        };
        Ok(match record {
            Record::DeviceEvent {
                landmark,
                sig,
                device,
                event,
                arg,
            } => {
                let input = match (device, event) {
                    (DEV_PIT, EV_PIT_CLOCK) => Input::ClockRead { ns: arg },
                    (DEV_PIT, EV_PIT_TICK) => Input::TimerTick,
                    (DEV_SERIAL, EV_SERIAL_INPUT) if arg <= 0xff => Input::SerialByte(arg as u8),
                    (DEV_SIGNATURES, EV_SIGNATURE_HASH) => Input::Checkpoint { hash: arg },
                    (n, EV_VIRTIO_USED) if n < DEV_PIT => Input::VirtioUsed {
                        slot: usize::from(n),
                    },
                    _ => return Err(EntryError::UnknownEvent { device, event }),
                };
                entry(landmark, sig, input)
            }
            Record::MemWrite {
                landmark,
                sig,
                gpa,
                data,
            } => entry(landmark, sig, Input::MemWrite { gpa, data }),
            Record::Interrupt {
                landmark,
                sig,
                vector,
            } => entry(landmark, sig, Input::Interrupt { vector }),
            Record::OutputDigest {
                landmark,
                device,
                digest,
            } => Entry {
                landmark,
                sig: None,
                input: Input::Output {
                    at: OutputAt::unpack(device),
                    digest,
                },
            },
            other => return Err(EntryError::NotAnEntry(other.kind())),
        })
    }
}
