//! The durable append-only log of the kv store on a block device (format: README.md,
//! "kv on-disk format").
//!
//! - Sector 0 holds a superblock (magic, version, log id, boot epoch, CRC-32).
//! - From byte 4096 (sector 8) on: a contiguous stream of records, each checksummed and
//!   numbered (`seq` 1, 2, 3, ...), spanning sectors freely.
//! - Boot: recovery replays records until the first one that is incomplete, fails its
//!   checksum, has the wrong sequence number or an impossible epoch (a torn tail); new
//!   records are appended right after the last good one. Every boot increments the epoch in
//!   the superblock first, so that stale records beyond a torn tail, written in an earlier
//!   boot, can never be mistaken for new ones (their epoch is smaller).
//! - Group commit: `append` encodes records into a pending batch (and reserves the disk
//!   space, or fails with `DiskFull`); `commit` writes the batch, starting with a rewrite of
//!   the partially filled tail sector, and flushes. Replies are sent only after that.
//!
//! Assumption: a single 512-byte sector write is atomic (either old or new content). The
//! tail sector is rewritten with its old bytes unchanged, so a torn commit never damages
//! records that were acknowledged before. No compaction: a full disk refuses writes.

use super::crc32::Crc32;
use alloc::vec;
use alloc::vec::Vec;

pub const SECTOR: usize = 512;
/// Byte offset of the first record (sector 8, 4 KiB aligned).
pub const LOG_START: u64 = 4096;
pub const MAGIC: &[u8; 8] = b"FTKVLOG1";
pub const VERSION: u32 = 1;
/// Record header: crc u32, seq u64, epoch u32, op u8, key length u32, value length u32.
pub const HEADER: usize = 25;
/// Upper bound on a key or value (the RESP parser already limits arguments to 1 MiB).
pub const MAX_FIELD: usize = 4 << 20;
/// Smallest usable disk: the superblock area and at least 4 KiB of log.
pub const MIN_SECTORS: u64 = 16;
/// Recovery reads the log in chunks of this size.
const READ_CHUNK: usize = 64 * 1024;

const OP_SET: u8 = 1;
const OP_DEL: u8 = 2;
const OP_CLEAR: u8 = 3;

/// One logical change of the key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Set(&'a [u8], &'a [u8]),
    Del(&'a [u8]),
    Clear,
}

impl Record<'_> {
    fn parts(&self) -> (u8, &[u8], &[u8]) {
        match *self {
            Record::Set(k, v) => (OP_SET, k, v),
            Record::Del(k) => (OP_DEL, k, &[]),
            Record::Clear => (OP_CLEAR, &[], &[]),
        }
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        let (_, k, v) = self.parts();
        HEADER + k.len() + v.len()
    }
}

/// A block device addressed in 512-byte sectors (virtio-blk in the guest, memory in tests).
pub trait Disk {
    /// Capacity in sectors.
    fn sectors(&self) -> u64;
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError>;
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), DiskError>;
}

/// A failed disk request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskError {
    pub op: &'static str,
    pub sector: u64,
    /// The device's status byte (virtio-blk: 1 = IOERR, 2 = UNSUPP), or 0xff.
    pub status: u8,
}

/// Why the log cannot be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    Io(DiskError),
    TooSmall(u64),
    /// Our magic, another format version.
    UnsupportedVersion(u32),
    /// Our magic, but the superblock checksum does not match.
    CorruptSuperblock,
}

impl From<DiskError> for OpenError {
    fn from(e: DiskError) -> Self {
        OpenError::Io(e)
    }
}

/// Why a write is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    DiskFull,
    ReadOnly,
}

/// The superblock in sector 0 (little-endian): magic[8], version u32, log id u32, epoch u64,
/// log start sector u64, disk sectors at format time u64, CRC-32 of bytes 0..40; zeros after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub log_id: u32,
    pub epoch: u64,
    pub formatted_sectors: u64,
}

impl Superblock {
    pub fn encode(&self) -> [u8; SECTOR] {
        let mut s = [0u8; SECTOR];
        s[0..8].copy_from_slice(MAGIC);
        s[8..12].copy_from_slice(&VERSION.to_le_bytes());
        s[12..16].copy_from_slice(&self.log_id.to_le_bytes());
        s[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        s[24..32].copy_from_slice(&(LOG_START / SECTOR as u64).to_le_bytes());
        s[32..40].copy_from_slice(&self.formatted_sectors.to_le_bytes());
        let crc = super::crc32::crc32(&s[0..40]);
        s[40..44].copy_from_slice(&crc.to_le_bytes());
        s
    }

    /// `Ok(None)` if the sector is not ours (no magic): a fresh or foreign disk.
    pub fn decode(s: &[u8]) -> Result<Option<Self>, OpenError> {
        if &s[0..8] != MAGIC {
            return Ok(None);
        }
        let version = le32(&s[8..]);
        if version != VERSION {
            return Err(OpenError::UnsupportedVersion(version));
        }
        if le32(&s[40..]) != super::crc32::crc32(&s[0..40]) || le64(&s[24..]) != LOG_START / 512 {
            return Err(OpenError::CorruptSuperblock);
        }
        Ok(Some(Self { log_id: le32(&s[12..]), epoch: le64(&s[16..]), formatted_sectors: le64(&s[32..]) }))
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap())
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// Appends the encoding of `rec` (record layout: README.md) to `out`.
pub fn encode(out: &mut Vec<u8>, log_id: u32, seq: u64, epoch: u32, rec: &Record<'_>) {
    let (op, k, v) = rec.parts();
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.push(op);
    out.extend_from_slice(&(k.len() as u32).to_le_bytes());
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(k);
    out.extend_from_slice(v);
    let crc = record_crc(log_id, &out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The record checksum covers the log id (not stored in the record) and the record after
/// its crc field, so that records of another log (an older format of this disk) never match.
fn record_crc(log_id: u32, body: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(&log_id.to_le_bytes());
    c.update(body);
    c.finish()
}

/// Result of decoding at the start of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record (checksum verified), its seq and epoch, and its length.
    Record { rec: Record<'a>, seq: u64, epoch: u32, len: usize },
    /// The slice ends before the record does: this many bytes are needed in all.
    NeedMore(usize),
    /// Not a valid record.
    Invalid,
}

/// Decodes the record at the start of `b`.
pub fn decode(b: &[u8], log_id: u32) -> Decoded<'_> {
    if b.len() < HEADER {
        return Decoded::NeedMore(HEADER);
    }
    let (klen, vlen) = (le32(&b[17..]) as usize, le32(&b[21..]) as usize);
    let op = b[16];
    let shape_ok = match op {
        OP_SET => true,
        OP_DEL => vlen == 0,
        OP_CLEAR => klen == 0 && vlen == 0,
        _ => false,
    };
    if !shape_ok || klen > MAX_FIELD || vlen > MAX_FIELD {
        return Decoded::Invalid;
    }
    let len = HEADER + klen + vlen;
    if b.len() < len {
        return Decoded::NeedMore(len);
    }
    if le32(b) != record_crc(log_id, &b[4..len]) {
        return Decoded::Invalid;
    }
    let (key, value) = (&b[HEADER..HEADER + klen], &b[HEADER + klen..len]);
    let rec = match op {
        OP_SET => Record::Set(key, value),
        OP_DEL => Record::Del(key),
        _ => Record::Clear,
    };
    Decoded::Record { rec, seq: le64(&b[4..]), epoch: le32(&b[12..]), len }
}

/// What `Log::open` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenInfo {
    /// The disk had no log and was formatted.
    pub formatted: bool,
    /// Records replayed.
    pub records: u64,
}

/// An open log, positioned after its last good record.
pub struct Log {
    sb: Superblock,
    capacity: u64,
    read_only: bool,
    /// Byte offset where the next committed record goes.
    tail: u64,
    /// Contents of the partially filled sector that contains `tail` (`tail % 512` bytes).
    tail_sector: Vec<u8>,
    next_seq: u64,
    /// Records committed so far (replayed + appended this boot).
    records: u64,
    /// Encoded records waiting for `commit`.
    pending: Vec<u8>,
    pending_records: u64,
}

impl Log {
    /// Opens (or, if it has no log yet, formats) the log on `disk`, calling `replay` for every
    /// good record in order. Unless `read_only`, the new boot epoch is made durable before
    /// this returns.
    pub fn open<D: Disk + ?Sized>(
        disk: &mut D,
        read_only: bool,
        mut replay: impl FnMut(&Record<'_>),
    ) -> Result<(Self, OpenInfo), OpenError> {
        let sectors = disk.sectors();
        if sectors < MIN_SECTORS {
            return Err(OpenError::TooSmall(sectors));
        }
        let capacity = sectors * SECTOR as u64;
        let mut s0 = [0u8; SECTOR];
        disk.read(0, &mut s0)?;
        let (mut sb, formatted) = match Superblock::decode(&s0)? {
            Some(sb) => (sb, false),
            None => {
                // The id only needs to differ from that of any log this disk held before;
                // deriving it from the old sector 0 keeps the guest deterministic.
                let mut c = Crc32::new();
                c.update(&s0);
                c.update(&sectors.to_le_bytes());
                (Superblock { log_id: c.finish(), epoch: 0, formatted_sectors: sectors }, true)
            }
        };
        let mut log = Log {
            sb,
            capacity,
            read_only,
            tail: LOG_START,
            tail_sector: Vec::new(),
            next_seq: 1,
            records: 0,
            pending: Vec::new(),
            pending_records: 0,
        };
        if !formatted {
            log.recover(disk, &mut replay)?;
        }
        if !read_only {
            if formatted {
                // No stale bytes of an older log may follow the superblock's first record.
                disk.write(LOG_START / SECTOR as u64, &[0u8; SECTOR])?;
            }
            sb.epoch += 1;
            disk.write(0, &sb.encode())?;
            disk.flush()?;
            log.sb = sb;
        }
        let info = OpenInfo { formatted, records: log.records };
        Ok((log, info))
    }

    /// Replays good records from LOG_START on and sets the tail after the last one.
    fn recover<D: Disk + ?Sized>(
        &mut self,
        disk: &mut D,
        replay: &mut impl FnMut(&Record<'_>),
    ) -> Result<(), OpenError> {
        // buf holds the disk bytes from offset `base` on; `pos` is relative to `base`.
        let mut buf: Vec<u8> = Vec::new();
        let mut base = LOG_START;
        let mut pos = 0usize;
        let mut last_epoch = 0u32;
        loop {
            match decode(&buf[pos..], self.sb.log_id) {
                Decoded::Record { rec, seq, epoch, len } => {
                    let epoch_ok = epoch >= last_epoch && u64::from(epoch) <= self.sb.epoch;
                    if seq != self.next_seq || !epoch_ok {
                        break;
                    }
                    replay(&rec);
                    self.next_seq += 1;
                    self.records += 1;
                    last_epoch = epoch;
                    pos += len;
                }
                Decoded::NeedMore(need) => {
                    let have_end = base + buf.len() as u64;
                    if base + (pos + need) as u64 > self.capacity || have_end >= self.capacity {
                        break;
                    }
                    // Drop whole sectors already consumed, keeping the one containing pos.
                    let drop = pos / SECTOR * SECTOR;
                    buf.drain(..drop);
                    base += drop as u64;
                    pos -= drop;
                    let want = (need - (buf.len() - pos)).max(READ_CHUNK);
                    let want = (want.div_ceil(SECTOR) * SECTOR) as u64;
                    let n = want.min(self.capacity - have_end) as usize;
                    let old = buf.len();
                    buf.resize(old + n, 0);
                    disk.read(have_end / SECTOR as u64, &mut buf[old..])?;
                }
                Decoded::Invalid => break,
            }
        }
        self.tail = base + pos as u64;
        let sector_start = pos / SECTOR * SECTOR;
        self.tail_sector = buf[sector_start..pos].to_vec();
        Ok(())
    }

    /// Encodes `records` into the pending batch, or refuses all of them if they do not fit.
    pub fn append(&mut self, records: &[Record<'_>]) -> Result<(), AppendError> {
        if self.read_only {
            return Err(AppendError::ReadOnly);
        }
        let total: u64 = records.iter().map(|r| r.encoded_len() as u64).sum();
        if self.tail + self.pending.len() as u64 + total > self.capacity {
            return Err(AppendError::DiskFull);
        }
        for rec in records {
            let seq = self.next_seq + self.pending_records;
            encode(&mut self.pending, self.sb.log_id, seq, self.sb.epoch as u32, rec);
            self.pending_records += 1;
        }
        Ok(())
    }

    /// Whether records are waiting for `commit`.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes the pending batch (one write, starting at the tail sector) and flushes.
    pub fn commit<D: Disk + ?Sized>(&mut self, disk: &mut D) -> Result<(), DiskError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut data = Vec::with_capacity(self.tail_sector.len() + self.pending.len() + SECTOR);
        data.extend_from_slice(&self.tail_sector);
        data.extend_from_slice(&self.pending);
        let used = data.len();
        data.resize(used.div_ceil(SECTOR) * SECTOR, 0);
        let first_sector = self.tail / SECTOR as u64;
        disk.write(first_sector, &data)?;
        disk.flush()?;
        self.tail += self.pending.len() as u64;
        let keep = used % SECTOR;
        self.tail_sector = data[used - keep..used].to_vec();
        self.next_seq += self.pending_records;
        self.records += self.pending_records;
        self.pending.clear();
        self.pending_records = 0;
        Ok(())
    }

    /// Records in the log (committed).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes used by records (committed).
    pub fn used_bytes(&self) -> u64 {
        self.tail - LOG_START
    }

    /// Bytes available for records.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity - LOG_START
    }

    pub fn epoch(&self) -> u64 {
        self.sb.epoch
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }
}

/// A disk in memory, for tests (and usable as a volatile stand-in).
pub struct MemDisk {
    pub data: Vec<u8>,
    pub writes: usize,
    pub flushes: usize,
}

impl MemDisk {
    pub fn new(sectors: u64) -> Self {
        Self { data: vec![0; sectors as usize * SECTOR], writes: 0, flushes: 0 }
    }
}

impl Disk for MemDisk {
    fn sectors(&self) -> u64 {
        (self.data.len() / SECTOR) as u64
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let off = sector as usize * SECTOR;
        buf.copy_from_slice(&self.data[off..off + buf.len()]);
        Ok(())
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        let off = sector as usize * SECTOR;
        self.data[off..off + buf.len()].copy_from_slice(buf);
        self.writes += 1;
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.flushes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
