//! The on-disk format of the kv log (README.md, "kv on-disk format"): constants, the
//! superblock in sector 0 and the checksummed records. Pure encoding and decoding; the log
//! itself (recovery, appends, group commit) is in `super::log`.

use super::crc32::Crc32;
use super::log::OpenError;
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
        Ok(Some(Self {
            log_id: le32(&s[12..]),
            epoch: le64(&s[16..]),
            formatted_sectors: le64(&s[32..]),
        }))
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
    Record {
        rec: Record<'a>,
        seq: u64,
        epoch: u32,
        len: usize,
    },
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
    Decoded::Record {
        rec,
        seq: le64(&b[4..]),
        epoch: le32(&b[12..]),
        len,
    }
}
