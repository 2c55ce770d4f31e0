//! The typed inputs and their log entries, and the one place where they map to records of the
//! logging channel (protocol version 2, docs/PROTOCOL.md): one record kind per input.

use crate::ft::record::{ExitSignature, Record, MAX_SERIAL};

/// Where an output waits in the guest: the chain `head` of `queue` of virtio device `slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputAt {
    pub slot: usize,
    pub queue: u16,
    pub head: u16,
}

/// Every non-deterministic input (the determinism contract is in the module above).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The VM clock in ns, as read by a PIT access (ports 0x40-0x43, 0x61) at this exit.
    ClockRead { ns: u64 },
    /// PIT channel 0 expired: IRQ 0 pulsed (several expirations coalesce into one edge, as
    /// a real 8259A latches one request per line).
    TimerTick,
    /// Bytes typed on the console, queued in the UART's receive FIFO (at most
    /// `MAX_SERIAL` per entry: a longer burst is several entries at the same landmark).
    SerialInput(Vec<u8>),
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

/// An entry that the logging channel cannot carry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("virtio slot {0} does not fit the protocol (at most {max})", max = u16::MAX)]
    Slot(usize),
    #[error("{0} bytes of serial input in one entry (at most {MAX_SERIAL})")]
    SerialInput(usize),
    #[error("record kind {0:?} is not a landmark entry")]
    NotAnEntry(crate::ft::record::Kind),
}

fn slot16(slot: usize) -> Result<u16, EntryError> {
    u16::try_from(slot).map_err(|_| EntryError::Slot(slot))
}

impl Entry {
    /// The record that carries this entry.
    pub fn to_record(&self) -> Result<Record, EntryError> {
        let landmark = self.landmark;
        let sig = self.sig.unwrap_or(crate::ft::signature::hlt_sig());
        Ok(match &self.input {
            Input::ClockRead { ns } => Record::ClockRead {
                landmark,
                sig,
                ns: *ns,
            },
            Input::TimerTick => Record::TimerTick { landmark, sig },
            Input::SerialInput(bytes) if bytes.len() > MAX_SERIAL => {
                return Err(EntryError::SerialInput(bytes.len()))
            }
            Input::SerialInput(bytes) => Record::SerialInput {
                landmark,
                sig,
                bytes: bytes.clone(),
            },
            Input::VirtioUsed { slot } => Record::VirtioUsed {
                landmark,
                sig,
                slot: slot16(*slot)?,
            },
            Input::Checkpoint { hash } => Record::Checkpoint {
                landmark,
                sig,
                hash: *hash,
            },
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
                slot: slot16(at.slot)?,
                queue: at.queue,
                head: at.head,
                digest: *digest,
            },
        })
    }

    /// The entry a landmark record carries.
    pub fn from_record(record: Record) -> Result<Entry, EntryError> {
        let (landmark, sig, input) = match record {
            Record::ClockRead { landmark, sig, ns } => (landmark, sig, Input::ClockRead { ns }),
            Record::TimerTick { landmark, sig } => (landmark, sig, Input::TimerTick),
            Record::SerialInput {
                landmark,
                sig,
                bytes,
            } => (landmark, sig, Input::SerialInput(bytes)),
            Record::VirtioUsed {
                landmark,
                sig,
                slot,
            } => (landmark, sig, Input::VirtioUsed { slot: slot.into() }),
            Record::Checkpoint {
                landmark,
                sig,
                hash,
            } => (landmark, sig, Input::Checkpoint { hash }),
            Record::MemWrite {
                landmark,
                sig,
                gpa,
                data,
            } => (landmark, sig, Input::MemWrite { gpa, data }),
            Record::Interrupt {
                landmark,
                sig,
                vector,
            } => (landmark, sig, Input::Interrupt { vector }),
            // An output is attributed to a landmark, but not to that exit: no signature.
            Record::OutputDigest {
                landmark,
                slot,
                queue,
                head,
                digest,
            } => {
                let at = OutputAt {
                    slot: slot.into(),
                    queue,
                    head,
                };
                return Ok(Entry {
                    landmark,
                    sig: None,
                    input: Input::Output { at, digest },
                });
            }
            other => return Err(EntryError::NotAnEntry(other.kind())),
        };
        Ok(Entry {
            landmark,
            sig: Some(sig),
            input,
        })
    }
}
