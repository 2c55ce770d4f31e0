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
pub use super::format::*;
use alloc::vec;
use alloc::vec::Vec;

/// Recovery reads the log in chunks of this size.
const READ_CHUNK: usize = 64 * 1024;

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
                (
                    Superblock {
                        log_id: c.finish(),
                        epoch: 0,
                        formatted_sectors: sectors,
                    },
                    true,
                )
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
        let info = OpenInfo {
            formatted,
            records: log.records,
        };
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
                Decoded::Record {
                    rec,
                    seq,
                    epoch,
                    len,
                } => {
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
            encode(
                &mut self.pending,
                self.sb.log_id,
                seq,
                self.sb.epoch as u32,
                rec,
            );
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
        Self {
            data: vec![0; sectors as usize * SECTOR],
            writes: 0,
            flushes: 0,
        }
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
