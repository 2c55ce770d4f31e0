//! Wire format of the FT *logging channel* (primary <-> backup): framed, versioned,
//! checksummed records, encoded by hand in little-endian. The byte layouts, the sequence and
//! acknowledgement rules and the error handling are specified in docs/PROTOCOL.md, section
//! "Logging channel"; this module is the reference implementation of that text.
//!
//! ```text
//! frame = "FTLR" | u32 body_len | body | u32 crc32      crc32 = CRC-32/IEEE over "FTLR"..body
//! body  = u8 version | u8 kind | u16 flags | u64 seq | payload
//! ```
//!
//! The sequence number travels in the frame header, not in [`Record`]: [`encode`] takes it as
//! an argument and [`decode`] returns it beside the record. [`RecordWriter`] numbers the records
//! it sends 1, 2, 3, ...; [`RecordReader`] checks that the numbers it receives are contiguous.
//!
//! Decoding never panics and never trusts a length before checking it against a fixed cap:
//! `body_len` is refused above [`MAX_RECORD`] as soon as the 8-byte header is present, and a
//! field's length is checked against both its own limit and the bytes actually present before
//! anything is allocated for it.

use std::io::{self, Read, Write};

/// Version of the record format written in every record. A record of any other version is
/// refused with [`RecordError::UnsupportedVersion`] (and the connection is closed).
pub const VERSION: u8 = 2;
/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"FTLR";
/// Magic + `body_len`.
pub const FRAME_HEADER: usize = 8;
/// The CRC after the body.
pub const FRAME_TRAILER: usize = 4;
/// `version` + `kind` + `flags` + `seq`: the smallest possible body.
pub const BODY_HEADER: usize = 12;
/// Largest `body_len` accepted (2 MiB). The largest valid v1 body is a little over
/// [`MAX_DATA`], so a length above this can only be corruption or a hostile peer; it is refused
/// from the 8-byte header alone, before any of the body is read or allocated.
pub const MAX_RECORD: usize = 2 << 20;
/// Largest `data` of `MemoryChunk` and `MemWrite`, and `blob` of `DeviceState` (1 MiB).
pub const MAX_DATA: usize = 1 << 20;
/// Largest `vm_id` of `Hello`, in bytes of UTF-8.
pub const MAX_VM_ID: usize = 64;
/// Largest device `name` of `DeviceState`, in bytes of UTF-8.
pub const MAX_DEVICE_NAME: usize = 64;
/// Largest `bytes` of `SerialInput` (console input batched at one landmark).
pub const MAX_SERIAL: usize = 4096;
/// Largest `reason` of `Diverged`, in bytes of UTF-8.
pub const MAX_REASON: usize = 1024;
/// Size of an encoded [`ExitSignature`].
pub const SIGNATURE_LEN: usize = 18;

// The largest valid body (DeviceState with the longest name and blob) must fit under the cap.
const _: () = assert!(MAX_RECORD >= BODY_HEADER + 2 + MAX_DEVICE_NAME + 4 + MAX_DATA);
const _: () = assert!(MAX_RECORD + FRAME_HEADER + FRAME_TRAILER <= u32::MAX as usize);

/// Why a record could not be encoded or decoded. Every decode error means the record was not
/// applied and the byte stream cannot be trusted any more: the connection must be closed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The frame does not start with "FTLR".
    #[error("bad record magic {0:02x?} (expected \"FTLR\")")]
    BadMagic([u8; 4]),
    /// `expected` is the CRC computed over the bytes received, `got` the CRC the frame carries.
    #[error("record checksum mismatch: computed {expected:#010x}, frame carries {got:#010x}")]
    BadChecksum { expected: u32, got: u32 },
    #[error("unsupported record version {0} (this side speaks version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown record kind {0:#04x}")]
    UnknownKind(u8),
    /// The byte stream ended inside a frame: `need` bytes make the frame (or its header, while
    /// `body_len` is not known yet), `have` were received.
    #[error("stream ended inside a record: {have} of {need} bytes")]
    Truncated { need: usize, have: usize },
    /// `body_len` (the value given) exceeds [`MAX_RECORD`].
    #[error("record body of {0} bytes exceeds the limit of {MAX_RECORD}")]
    TooLarge(usize),
    /// A variable-length field over its limit (decoded, or given to [`encode`]).
    #[error("{field} is {len} bytes long, the limit is {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// A frame whose checksum is right but whose contents do not follow the format (or a record
    /// given to [`encode`] that cannot be represented).
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// [`RecordReader`]: a record whose sequence number is not the previous one plus one.
    #[error("record out of sequence: expected seq {expected}, got {got}")]
    Sequence { expected: u64, got: u64 },
    #[error("logging channel I/O: {0}")]
    Io(#[from] io::Error),
}

/// Declares [`Kind`], its list and its decoding from one table, so that a kind cannot be
/// added to one and forgotten in another.
macro_rules! kinds {
    ($($(#[$doc:meta])* $name:ident = $code:literal,)*) => {
        /// Kind byte of each record (the `kind` field of the body).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Kind {
            $($(#[$doc])* $name = $code,)*
        }

        impl Kind {
            /// Every kind, in code order.
            pub const ALL: &'static [Kind] = &[$(Kind::$name,)*];

            pub fn from_u8(code: u8) -> Option<Kind> {
                match code {
                    $($code => Some(Kind::$name),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    Hello = 0x01,
    StateBegin = 0x02,
    MemoryChunk = 0x03,
    DeviceState = 0x04,
    StateEnd = 0x05,
    MemoryZero = 0x06,
    Interrupt = 0x10,
    ClockRead = 0x11,
    TimerTick = 0x12,
    MemWrite = 0x13,
    SerialInput = 0x14,
    OutputDigest = 0x15,
    Checkpoint = 0x16,
    VirtioUsed = 0x17,
    Heartbeat = 0x20,
    Ack = 0x30,
    Diverged = 0x31,
}

/// What kind of exit a landmark is (the `kind` byte of an [`ExitSignature`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExitKind {
    PioIn = 1,
    PioOut = 2,
    MmioRead = 3,
    MmioWrite = 4,
    Hlt = 5,
}

impl ExitKind {
    pub const ALL: [ExitKind; 5] = [
        ExitKind::PioIn,
        ExitKind::PioOut,
        ExitKind::MmioRead,
        ExitKind::MmioWrite,
        ExitKind::Hlt,
    ];

    pub fn from_u8(code: u8) -> Option<ExitKind> {
        ExitKind::ALL.iter().copied().find(|k| *k as u8 == code)
    }
}

/// The exit at which a landmark entry applies, so that the backup can check that its own exit
/// with the same landmark number is the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitSignature {
    pub kind: ExitKind,
    /// Port number (PIO) or guest-physical address (MMIO); 0 for `Hlt`.
    pub addr: u64,
    /// Access size in bytes; 0 for `Hlt`.
    pub size: u8,
    /// The data written (PioOut, MmioWrite, zero-extended little-endian); 0 otherwise.
    pub data: u64,
}

/// One logging-channel record. The sequence number is not part of it (see the module doc).
/// docs/PROTOCOL.md gives each kind's byte layout and meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Primary -> backup, first record of a connection. `vm_id` <= [`MAX_VM_ID`] bytes.
    Hello {
        vm_id: String,
        epoch: u64,
        mem_size: u64,
    },
    /// Start of a state transfer of the primary's state after landmark `landmark`.
    StateBegin { landmark: u64 },
    /// Guest RAM at `gpa`; `data` <= [`MAX_DATA`] bytes.
    MemoryChunk { gpa: u64, data: Vec<u8> },
    /// Opaque serialized state of the device (or vCPU) `name` (<= [`MAX_DEVICE_NAME`] bytes);
    /// `blob` <= [`MAX_DATA`] bytes.
    DeviceState { name: String, blob: Vec<u8> },
    /// End of the state transfer; `landmark` is where the primary stopped for its last part.
    /// `digest` is reserved and sent as zeros: a pre-copy transfer has no moment at which the
    /// primary could hash its RAM without pausing for it (docs/PROTOCOL.md).
    StateEnd { landmark: u64, digest: [u8; 32] },
    /// `len` bytes of guest RAM from `gpa` are zero (pre-copy: a dirtied page that is now
    /// zero travels as this marker instead of its 4 KiB).
    MemoryZero { gpa: u64, len: u64 },
    /// Landmark entry: the primary injected `vector` at this landmark.
    Interrupt {
        landmark: u64,
        sig: ExitSignature,
        vector: u8,
    },
    /// Landmark entry: the PIT access of this exit saw the VM clock at `ns`.
    ClockRead {
        landmark: u64,
        sig: ExitSignature,
        ns: u64,
    },
    /// Landmark entry: PIT channel 0 expired (IRQ 0 pulsed).
    TimerTick { landmark: u64, sig: ExitSignature },
    /// Landmark entry: a device wrote `data` (<= [`MAX_DATA`] bytes) into guest memory at `gpa`.
    MemWrite {
        landmark: u64,
        sig: ExitSignature,
        gpa: u64,
        data: Vec<u8>,
    },
    /// Landmark entry: console input (<= [`MAX_SERIAL`] bytes) queued in the UART.
    SerialInput {
        landmark: u64,
        sig: ExitSignature,
        bytes: Vec<u8>,
    },
    /// Landmark entry: the SHA-256 of the output chain `head` of virtio device `slot`'s
    /// `queue` (any queue size virtio allows: head < 32768).
    OutputDigest {
        landmark: u64,
        slot: u16,
        queue: u16,
        head: u16,
        digest: [u8; 32],
    },
    /// Landmark entry: nothing to apply; `hash` is the running hash of every signature so
    /// far, which lets the backup check and pass the landmarks up to this one.
    Checkpoint {
        landmark: u64,
        sig: ExitSignature,
        hash: u64,
    },
    /// Landmark entry: virtio device `slot` has used buffers (its interrupt is raised).
    VirtioUsed {
        landmark: u64,
        sig: ExitSignature,
        slot: u16,
    },
    /// Both ways: the sender's landmark (primary: reached; backup: replayed) and wall clock.
    Heartbeat { landmark: u64, unix_ms: u64 },
    /// Backup -> primary: every primary record up to and including `seq` was received.
    Ack { seq: u64 },
    /// Backup -> primary: the backup diverged at `landmark`; `reason` <= [`MAX_REASON`] bytes.
    Diverged { landmark: u64, reason: String },
}

impl Record {
    pub fn kind(&self) -> Kind {
        match self {
            Record::Hello { .. } => Kind::Hello,
            Record::StateBegin { .. } => Kind::StateBegin,
            Record::MemoryChunk { .. } => Kind::MemoryChunk,
            Record::DeviceState { .. } => Kind::DeviceState,
            Record::StateEnd { .. } => Kind::StateEnd,
            Record::MemoryZero { .. } => Kind::MemoryZero,
            Record::Interrupt { .. } => Kind::Interrupt,
            Record::ClockRead { .. } => Kind::ClockRead,
            Record::TimerTick { .. } => Kind::TimerTick,
            Record::MemWrite { .. } => Kind::MemWrite,
            Record::SerialInput { .. } => Kind::SerialInput,
            Record::OutputDigest { .. } => Kind::OutputDigest,
            Record::Checkpoint { .. } => Kind::Checkpoint,
            Record::VirtioUsed { .. } => Kind::VirtioUsed,
            Record::Heartbeat { .. } => Kind::Heartbeat,
            Record::Ack { .. } => Kind::Ack,
            Record::Diverged { .. } => Kind::Diverged,
        }
    }

    /// The landmark of a landmark entry (`Interrupt` .. `VirtioUsed`), `None` for the others.
    pub fn entry_landmark(&self) -> Option<u64> {
        match self {
            Record::Interrupt { landmark, .. }
            | Record::ClockRead { landmark, .. }
            | Record::TimerTick { landmark, .. }
            | Record::MemWrite { landmark, .. }
            | Record::SerialInput { landmark, .. }
            | Record::OutputDigest { landmark, .. }
            | Record::Checkpoint { landmark, .. }
            | Record::VirtioUsed { landmark, .. } => Some(*landmark),
            _ => None,
        }
    }

    /// Checks every limit that [`decode`] enforces, so that whatever encodes also decodes.
    fn validate(&self) -> Result<(), RecordError> {
        fn limit(field: &'static str, len: usize, max: usize) -> Result<(), RecordError> {
            if len > max {
                return Err(RecordError::FieldTooLong { field, len, max });
            }
            Ok(())
        }
        match self {
            Record::Hello { vm_id, .. } => limit("vm_id", vm_id.len(), MAX_VM_ID),
            Record::MemoryChunk { gpa, data } | Record::MemWrite { gpa, data, .. } => {
                limit("data", data.len(), MAX_DATA)?;
                check_range(*gpa, data.len())
            }
            Record::DeviceState { name, blob } => {
                limit("name", name.len(), MAX_DEVICE_NAME)?;
                limit("blob", blob.len(), MAX_DATA)
            }
            Record::Diverged { reason, .. } => limit("reason", reason.len(), MAX_REASON),
            Record::SerialInput { bytes, .. } => limit("bytes", bytes.len(), MAX_SERIAL),
            Record::MemoryZero { gpa, len } => check_zero_range(*gpa, *len),
            _ => Ok(()),
        }
    }
}

/// `gpa .. gpa + len` must not wrap around the guest-physical address space.
fn check_range(gpa: u64, len: usize) -> Result<(), RecordError> {
    match u64::try_from(len).ok().and_then(|len| gpa.checked_add(len)) {
        Some(_) => Ok(()),
        None => Err(RecordError::Malformed("gpa + data length overflows u64")),
    }
}

/// A `MemoryZero` range must not wrap around the guest-physical address space.
fn check_zero_range(gpa: u64, len: u64) -> Result<(), RecordError> {
    match gpa.checked_add(len) {
        Some(_) => Ok(()),
        None => Err(RecordError::Malformed(
            "gpa + zero range length overflows u64",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn put_sig(out: &mut Vec<u8>, sig: &ExitSignature) {
    out.push(sig.kind as u8);
    out.extend_from_slice(&sig.addr.to_le_bytes());
    out.push(sig.size);
    out.extend_from_slice(&sig.data.to_le_bytes());
}

/// Length-prefixed (u16) UTF-8. The caller has checked the length against its limit (<= 1024).
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u16::try_from(s.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Length-prefixed (u32) bytes. The caller has checked the length against [`MAX_DATA`].
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_payload(out: &mut Vec<u8>, record: &Record) {
    let u64s = |out: &mut Vec<u8>, vals: &[u64]| {
        for v in vals {
            out.extend_from_slice(&v.to_le_bytes());
        }
    };
    match record {
        Record::Hello {
            vm_id,
            epoch,
            mem_size,
        } => {
            u64s(out, &[*epoch, *mem_size]);
            put_str(out, vm_id);
        }
        Record::StateBegin { landmark } => u64s(out, &[*landmark]),
        Record::MemoryChunk { gpa, data } => {
            u64s(out, &[*gpa]);
            put_bytes(out, data);
        }
        Record::DeviceState { name, blob } => {
            put_str(out, name);
            put_bytes(out, blob);
        }
        Record::StateEnd { landmark, digest } => {
            u64s(out, &[*landmark]);
            out.extend_from_slice(digest);
        }
        Record::MemoryZero { gpa, len } => u64s(out, &[*gpa, *len]),
        Record::Interrupt {
            landmark,
            sig,
            vector,
        } => {
            u64s(out, &[*landmark]);
            put_sig(out, sig);
            out.push(*vector);
        }
        Record::ClockRead { landmark, sig, ns } => {
            u64s(out, &[*landmark]);
            put_sig(out, sig);
            u64s(out, &[*ns]);
        }
        Record::TimerTick { landmark, sig } => {
            u64s(out, &[*landmark]);
            put_sig(out, sig);
        }
        Record::MemWrite {
            landmark,
            sig,
            gpa,
            data,
        } => {
            u64s(out, &[*landmark]);
            put_sig(out, sig);
            u64s(out, &[*gpa]);
            put_bytes(out, data);
        }
        Record::SerialInput {
            landmark,
            sig,
            bytes,
        } => {
            u64s(out, &[*landmark]);
            put_sig(out, sig);
            put_bytes(out, bytes);
        }
        Record::OutputDigest {
            landmark,
            slot,
            queue,
            head,
            digest,
        } => {
            u64s(out, &[*landmark]);
            for v in [slot, queue, head] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(digest);
        }
        Record::Checkpoint {
            landmark,
            sig,
            hash,
        } => {
            u64s(out, &[*landmark]);
            put_sig(out, sig);
            u64s(out, &[*hash]);
        }
        Record::VirtioUsed {
            landmark,
            sig,
            slot,
        } => {
            u64s(out, &[*landmark]);
            put_sig(out, sig);
            out.extend_from_slice(&slot.to_le_bytes());
        }
        Record::Heartbeat { landmark, unix_ms } => u64s(out, &[*landmark, *unix_ms]),
        Record::Ack { seq } => u64s(out, &[*seq]),
        Record::Diverged { landmark, reason } => {
            u64s(out, &[*landmark]);
            put_str(out, reason);
        }
    }
}

/// CRC-32/IEEE (the one of zlib and Ethernet) of `bytes`.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Appends the frame of `record` with sequence number `seq` to `out`.
///
/// Fails, leaving `out` as it was, if a field is over its limit ([`RecordError::FieldTooLong`])
/// or a `gpa` range wraps around ([`RecordError::Malformed`]): such a record would be refused
/// by the peer's [`decode`], so it is refused here instead.
pub fn encode(seq: u64, record: &Record, out: &mut Vec<u8>) -> Result<(), RecordError> {
    record.validate()?;
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 4]); // body_len, patched below
    out.push(VERSION);
    out.push(record.kind() as u8);
    out.extend_from_slice(&0u16.to_le_bytes()); // flags
    out.extend_from_slice(&seq.to_le_bytes());
    put_payload(out, record);
    let body_len = out.len() - start - FRAME_HEADER;
    if body_len > MAX_RECORD {
        // Unreachable after validate() (see the const assertion on MAX_RECORD); kept so that a
        // future kind cannot produce a frame that no decoder accepts.
        out.truncate(start);
        return Err(RecordError::TooLarge(body_len));
    }
    let body_len = u32::try_from(body_len).map_err(|_| RecordError::TooLarge(body_len))?;
    out[start + 4..start + 8].copy_from_slice(&body_len.to_le_bytes());
    let crc = checksum(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Reads fields from a payload; every read is bounds-checked.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if n > self.buf.len() {
            return Err(RecordError::Malformed("payload ends inside a field"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn sig(&mut self) -> Result<ExitSignature, RecordError> {
        let kind =
            ExitKind::from_u8(self.u8()?).ok_or(RecordError::Malformed("unknown exit kind"))?;
        let addr = self.u64()?;
        let size = self.u8()?;
        let data = self.u64()?;
        Ok(ExitSignature {
            kind,
            addr,
            size,
            data,
        })
    }

    /// A u16-prefixed UTF-8 string of at most `max` bytes.
    fn string(&mut self, field: &'static str, max: usize) -> Result<String, RecordError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(RecordError::FieldTooLong { field, len, max });
        }
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes)
            .map_err(|_| RecordError::Malformed("string is not UTF-8"))?;
        Ok(s.to_owned())
    }

    /// A u32-prefixed byte string of at most `max` bytes. Allocates only after the length has
    /// been checked against `max` and against the bytes present.
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, RecordError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(RecordError::FieldTooLong { field, len, max });
        }
        Ok(self.take(len)?.to_vec())
    }

    fn finish(self) -> Result<(), RecordError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Malformed("trailing bytes after the payload"))
        }
    }
}

fn decode_payload(kind: Kind, c: &mut Cursor<'_>) -> Result<Record, RecordError> {
    let record = match kind {
        Kind::Hello => {
            let epoch = c.u64()?;
            let mem_size = c.u64()?;
            let vm_id = c.string("vm_id", MAX_VM_ID)?;
            Record::Hello {
                vm_id,
                epoch,
                mem_size,
            }
        }
        Kind::StateBegin => Record::StateBegin { landmark: c.u64()? },
        Kind::MemoryChunk => {
            let gpa = c.u64()?;
            let data = c.bytes("data", MAX_DATA)?;
            check_range(gpa, data.len())?;
            Record::MemoryChunk { gpa, data }
        }
        Kind::DeviceState => {
            let name = c.string("name", MAX_DEVICE_NAME)?;
            let blob = c.bytes("blob", MAX_DATA)?;
            Record::DeviceState { name, blob }
        }
        Kind::StateEnd => Record::StateEnd {
            landmark: c.u64()?,
            digest: c.array()?,
        },
        Kind::MemoryZero => {
            let (gpa, len) = (c.u64()?, c.u64()?);
            check_zero_range(gpa, len)?;
            Record::MemoryZero { gpa, len }
        }
        Kind::Interrupt => Record::Interrupt {
            landmark: c.u64()?,
            sig: c.sig()?,
            vector: c.u8()?,
        },
        Kind::ClockRead => Record::ClockRead {
            landmark: c.u64()?,
            sig: c.sig()?,
            ns: c.u64()?,
        },
        Kind::TimerTick => Record::TimerTick {
            landmark: c.u64()?,
            sig: c.sig()?,
        },
        Kind::MemWrite => {
            let landmark = c.u64()?;
            let sig = c.sig()?;
            let gpa = c.u64()?;
            let data = c.bytes("data", MAX_DATA)?;
            check_range(gpa, data.len())?;
            Record::MemWrite {
                landmark,
                sig,
                gpa,
                data,
            }
        }
        Kind::SerialInput => Record::SerialInput {
            landmark: c.u64()?,
            sig: c.sig()?,
            bytes: c.bytes("bytes", MAX_SERIAL)?,
        },
        Kind::OutputDigest => Record::OutputDigest {
            landmark: c.u64()?,
            slot: c.u16()?,
            queue: c.u16()?,
            head: c.u16()?,
            digest: c.array()?,
        },
        Kind::Checkpoint => Record::Checkpoint {
            landmark: c.u64()?,
            sig: c.sig()?,
            hash: c.u64()?,
        },
        Kind::VirtioUsed => Record::VirtioUsed {
            landmark: c.u64()?,
            sig: c.sig()?,
            slot: c.u16()?,
        },
        Kind::Heartbeat => Record::Heartbeat {
            landmark: c.u64()?,
            unix_ms: c.u64()?,
        },
        Kind::Ack => Record::Ack { seq: c.u64()? },
        Kind::Diverged => {
            let landmark = c.u64()?;
            let reason = c.string("reason", MAX_REASON)?;
            Record::Diverged { landmark, reason }
        }
    };
    Ok(record)
}

/// Total length of the frame whose first bytes are `buf`, once its 8-byte header is there:
/// `Ok(None)` before that, an error if the magic or `body_len` is wrong.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    if buf.len() < MAGIC.len() {
        return Ok(None);
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&buf[..4]);
    if magic != MAGIC {
        return Err(RecordError::BadMagic(magic));
    }
    if buf.len() < FRAME_HEADER {
        return Ok(None);
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&buf[4..8]);
    let body_len = u32::from_le_bytes(len) as usize;
    if body_len > MAX_RECORD {
        return Err(RecordError::TooLarge(body_len));
    }
    if body_len < BODY_HEADER {
        return Err(RecordError::Malformed(
            "body_len is shorter than the body header",
        ));
    }
    Ok(Some(FRAME_HEADER + body_len + FRAME_TRAILER))
}

/// Decodes the frame at the start of `buf`.
///
/// `Ok(None)`: `buf` holds only the beginning of a frame (so far valid); call again with more
/// bytes. `Ok(Some((seq, record, consumed)))`: the first `consumed` bytes were one valid frame.
/// An error: the bytes are not a valid frame; nothing may be applied, the stream is unusable.
///
/// The magic and `body_len` are checked as soon as they are present, so that garbage or an
/// oversized length fails at once instead of waiting for bytes that never come.
pub fn decode(buf: &[u8]) -> Result<Option<(u64, Record, usize)>, RecordError> {
    let total = match frame_len(buf)? {
        Some(total) => total,
        None => return Ok(None),
    };
    if buf.len() < total {
        return Ok(None);
    }
    let (framed, rest) = buf.split_at(total - FRAME_TRAILER);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&rest[..FRAME_TRAILER]);
    let got = u32::from_le_bytes(crc);
    let expected = checksum(framed);
    if expected != got {
        return Err(RecordError::BadChecksum { expected, got });
    }

    let mut c = Cursor {
        buf: &framed[FRAME_HEADER..],
    };
    let version = c.u8()?;
    if version != VERSION {
        return Err(RecordError::UnsupportedVersion(version));
    }
    let code = c.u8()?;
    let kind = Kind::from_u8(code).ok_or(RecordError::UnknownKind(code))?;
    if c.u16()? != 0 {
        return Err(RecordError::Malformed("flags are not zero"));
    }
    let seq = c.u64()?;
    let record = decode_payload(kind, &mut c)?;
    c.finish()?;
    Ok(Some((seq, record, total)))
}

// ---------------------------------------------------------------------------------------------
// Streams

/// The most the reader asks of the stream at a time, and so how far its buffer grows beyond
/// the frame being assembled.
const READ_CHUNK: usize = 64 << 10;

/// Reads records from a byte stream (the logging-channel socket).
///
/// Resumable: an I/O error such as `WouldBlock` or `TimedOut` (a socket read timeout used to
/// notice missing heartbeats) is returned as [`RecordError::Io`] and loses nothing; the next
/// call goes on with the frame it had begun. Any other error is final: the connection must be
/// closed. The buffer never exceeds one frame ([`MAX_RECORD`] + 12) plus [`READ_CHUNK`].
pub struct RecordReader<R: Read> {
    inner: R,
    buf: Vec<u8>,
    /// Received bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    next_seq: u64,
    /// Bytes of the frames decoded so far.
    decoded: u64,
}

impl<R: Read> RecordReader<R> {
    /// A reader that expects the first record to carry sequence number 1.
    pub fn new(inner: R) -> Self {
        Self::starting_at(inner, 1)
    }

    /// A reader that expects the first record to carry `first_seq`.
    pub fn starting_at(inner: R, first_seq: u64) -> Self {
        RecordReader {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
            next_seq: first_seq,
            decoded: 0,
        }
    }

    /// Bytes of the frames returned so far (what the log cost on the wire).
    pub fn bytes_decoded(&self) -> u64 {
        self.decoded
    }

    /// Whether a complete frame is already buffered, i.e. `next` will not block. The backup
    /// acknowledges once per batch of buffered records instead of once per record.
    pub fn has_buffered_frame(&self) -> bool {
        matches!(frame_len(&self.buf[self.start..self.end]), Ok(Some(n)) if n <= self.end - self.start)
    }

    /// The sequence number of the last record returned (`first_seq - 1` before any): what the
    /// backup acknowledges.
    pub fn last_seq(&self) -> u64 {
        self.next_seq.wrapping_sub(1)
    }

    /// The next record and its sequence number; `Ok(None)` at a clean end of stream (between
    /// frames). End of stream inside a frame is [`RecordError::Truncated`].
    // Not an Iterator: the end of stream and the errors need to stay distinct and typed.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(u64, Record)>, RecordError> {
        loop {
            if let Some((seq, record, consumed)) = decode(&self.buf[self.start..self.end])? {
                self.start += consumed;
                self.decoded += consumed as u64;
                if seq != self.next_seq {
                    return Err(RecordError::Sequence {
                        expected: self.next_seq,
                        got: seq,
                    });
                }
                self.next_seq = seq.wrapping_add(1);
                return Ok(Some((seq, record)));
            }
            if self.fill()? == 0 {
                let have = self.end - self.start;
                if have == 0 {
                    return Ok(None);
                }
                // decode() returned None, so frame_len() cannot fail here.
                let need = match frame_len(&self.buf[self.start..self.end]) {
                    Ok(Some(total)) => total,
                    _ => FRAME_HEADER,
                };
                return Err(RecordError::Truncated { need, have });
            }
        }
    }

    /// One read from the stream into the buffer; returns the byte count (0 = end of stream).
    fn fill(&mut self) -> Result<usize, RecordError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // Room for as much again as is buffered, between 4 KiB and READ_CHUNK: the buffer
        // grows with the bytes actually received, never with a length the peer announces.
        let want = self.end.clamp(4096, READ_CHUNK);
        if self.buf.len() < self.end + want {
            self.buf.resize(self.end + want, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Writes records to a byte stream, numbering them 1, 2, 3, ... (or from `first_seq`).
/// Each record is handed to the stream with one `write_all`; wrap the stream in a
/// `BufWriter` to batch small records, and call [`RecordWriter::flush`].
pub struct RecordWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    next_seq: u64,
}

impl<W: Write> RecordWriter<W> {
    pub fn new(inner: W) -> Self {
        Self::starting_at(inner, 1)
    }

    pub fn starting_at(inner: W, first_seq: u64) -> Self {
        RecordWriter {
            inner,
            buf: Vec::new(),
            next_seq: first_seq,
        }
    }

    /// Encodes and writes `record`; returns the sequence number it was given. A record that
    /// cannot be encoded is refused without writing anything or using up a sequence number.
    /// After an `Io` error the stream may hold part of a frame: close the connection.
    pub fn write(&mut self, record: &Record) -> Result<u64, RecordError> {
        self.buf.clear();
        let seq = self.next_seq;
        encode(seq, record, &mut self.buf)?;
        self.next_seq = seq.wrapping_add(1);
        self.inner.write_all(&self.buf)?;
        Ok(seq)
    }

    pub fn flush(&mut self) -> Result<(), RecordError> {
        Ok(self.inner.flush()?)
    }

    /// The sequence number of the last record written (`first_seq - 1` before any): the log
    /// position of an output produced now.
    pub fn last_seq(&self) -> u64 {
        self.next_seq.wrapping_sub(1)
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
