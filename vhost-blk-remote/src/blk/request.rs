//! Parsing and validation of virtio-blk requests (virtio 1.2, section 5.2.6).
//!
//! A request is a descriptor chain: device-readable descriptors (the 16-byte header, then
//! the data of a write or the segments of a discard) followed by device-writable ones (the
//! data of a read or GET_ID, then the status byte, which is the last writable byte). Framing
//! is not assumed: the header and the data may be split over descriptors in any way.
//!
//! Every descriptor is checked against guest memory and for direction before anything is
//! read or written. A request that fails validation still gets `VIRTIO_BLK_S_IOERR` when a
//! status byte can be located; otherwise it is completed without a status (used length 0).

use std::ops::Deref;

use virtio_bindings::virtio_blk::*;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend};

use super::config::{MAX_REQUEST_BYTES, SECTOR_SIZE};

/// A guest buffer: `len` bytes at guest physical address `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// Why a chain is not a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("descriptor [{addr:#x}, +{len}) is outside guest memory")]
    OutOfMemory { addr: u64, len: u32 },
    #[error("device-readable descriptor after a device-writable one")]
    WrongDirection,
    #[error("request header shorter than 16 bytes ({0})")]
    ShortHeader(u64),
    #[error("no device-writable byte for the status")]
    NoStatus,
    #[error("request of {0} bytes is too large")]
    TooLarge(u64),
    #[error("data length {0} is not a multiple of 512")]
    BadLength(u64),
    #[error("malformed discard payload of {0} bytes")]
    BadDiscard(u64),
    #[error("could not read the request from guest memory")]
    ReadFailed,
}

/// One discard range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscardRange {
    pub sector: u64,
    pub num_sectors: u32,
    pub flags: u32,
}

/// What the request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// `VIRTIO_BLK_T_IN`: read into `segs` (total `len` bytes).
    In {
        sector: u64,
        segs: Vec<Segment>,
        len: u32,
    },
    /// `VIRTIO_BLK_T_OUT`: `data` copied out of the guest at parse time.
    Out { sector: u64, data: Vec<u8> },
    /// `VIRTIO_BLK_T_FLUSH`.
    Flush,
    /// `VIRTIO_BLK_T_GET_ID`: up to 20 bytes into `segs`.
    GetId { segs: Vec<Segment> },
    /// `VIRTIO_BLK_T_DISCARD`.
    Discard { ranges: Vec<DiscardRange> },
    /// Any other type.
    Unsupported(u32),
}

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head: u16,
    pub kind: RequestKind,
    pub status_addr: GuestAddress,
}

/// A chain that could not be turned into a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub head: u16,
    /// Where the status byte is, if it could be located inside guest memory.
    pub status_addr: Option<GuestAddress>,
    pub error: RequestError,
}

/// Gathers `len` bytes starting `skip` bytes into the concatenation of `segs`.
fn gather<M: GuestMemoryBackend>(
    mem: &M,
    segs: &[Segment],
    mut skip: u64,
    len: usize,
) -> Result<Vec<u8>, RequestError> {
    let mut out = vec![0u8; len];
    let mut done = 0usize;
    for s in segs {
        if done == len {
            break;
        }
        if skip >= u64::from(s.len) {
            skip -= u64::from(s.len);
            continue;
        }
        let n = usize::try_from(u64::from(s.len) - skip).map_or(len - done, |n| n.min(len - done));
        let addr = s.addr.checked_add(skip).ok_or(RequestError::ReadFailed)?;
        mem.read_slice(&mut out[done..done + n], addr)
            .map_err(|_| RequestError::ReadFailed)?;
        done += n;
        skip = 0;
    }
    if done != len {
        return Err(RequestError::ReadFailed);
    }
    Ok(out)
}

fn total(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

/// Parses and validates one descriptor chain.
pub fn parse<M>(chain: DescriptorChain<M>) -> Result<Request, Invalid>
where
    M: Deref + Clone,
    M::Target: GuestMemoryBackend + Sized,
{
    let head = chain.head_index();
    let mem = chain.memory();
    let mut readable = Vec::new();
    let mut writable = Vec::new();
    let mut first_error = None;
    for desc in chain.clone() {
        let seg = Segment {
            addr: desc.addr(),
            len: desc.len(),
        };
        if seg.len == 0 {
            continue;
        }
        if !GuestMemoryBackend::check_range(mem, seg.addr, seg.len as usize) {
            first_error.get_or_insert(RequestError::OutOfMemory {
                addr: seg.addr.raw_value(),
                len: seg.len,
            });
        }
        if desc.is_write_only() {
            writable.push(seg);
        } else {
            if !writable.is_empty() {
                first_error.get_or_insert(RequestError::WrongDirection);
            }
            readable.push(seg);
        }
    }
    // The status byte is the last byte of the last writable descriptor.
    let status_addr = writable.last().and_then(|s| {
        let a = s.addr.checked_add(u64::from(s.len) - 1)?;
        GuestMemoryBackend::check_range(mem, a, 1).then_some(a)
    });
    let invalid = |error| Invalid {
        head,
        status_addr,
        error,
    };
    if let Some(e) = first_error {
        return Err(invalid(e));
    }
    let Some(status) = status_addr else {
        return Err(invalid(RequestError::NoStatus));
    };
    let data_bytes = total(&readable) + total(&writable);
    if data_bytes > u64::from(MAX_REQUEST_BYTES) + 4096 {
        return Err(invalid(RequestError::TooLarge(data_bytes)));
    }
    let rlen = total(&readable);
    if rlen < 16 {
        return Err(invalid(RequestError::ShortHeader(rlen)));
    }
    let hdr = gather(mem, &readable, 0, 16).map_err(invalid)?;
    let rtype = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let sector = u64::from_le_bytes([
        hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
    ]);
    // The writable data area: everything but the final status byte.
    let mut data_segs = writable.clone();
    if let Some(last) = data_segs.last_mut() {
        last.len -= 1;
        if last.len == 0 {
            data_segs.pop();
        }
    }
    let kind = match rtype {
        VIRTIO_BLK_T_IN => {
            let len = total(&data_segs);
            if !len.is_multiple_of(SECTOR_SIZE) {
                return Err(invalid(RequestError::BadLength(len)));
            }
            let len32 = u32::try_from(len)
                .ok()
                .filter(|&l| l <= MAX_REQUEST_BYTES)
                .ok_or_else(|| invalid(RequestError::TooLarge(len)))?;
            RequestKind::In {
                sector,
                segs: data_segs,
                len: len32,
            }
        }
        VIRTIO_BLK_T_OUT => {
            let len = rlen - 16;
            if !len.is_multiple_of(SECTOR_SIZE) {
                return Err(invalid(RequestError::BadLength(len)));
            }
            let n = usize::try_from(len)
                .ok()
                .filter(|_| len <= u64::from(MAX_REQUEST_BYTES))
                .ok_or_else(|| invalid(RequestError::TooLarge(len)))?;
            let data = gather(mem, &readable, 16, n).map_err(invalid)?;
            RequestKind::Out { sector, data }
        }
        VIRTIO_BLK_T_FLUSH => RequestKind::Flush,
        VIRTIO_BLK_T_GET_ID => RequestKind::GetId { segs: data_segs },
        VIRTIO_BLK_T_DISCARD => {
            let len = rlen - 16;
            if len == 0 || !len.is_multiple_of(16) || len > 16 * 256 {
                return Err(invalid(RequestError::BadDiscard(len)));
            }
            // At most 16 * 256 bytes, checked above.
            let n = usize::try_from(len).map_err(|_| invalid(RequestError::BadDiscard(len)))?;
            let raw = gather(mem, &readable, 16, n).map_err(invalid)?;
            let ranges = raw
                .chunks_exact(16)
                .map(|c| DiscardRange {
                    sector: u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                    num_sectors: u32::from_le_bytes([c[8], c[9], c[10], c[11]]),
                    flags: u32::from_le_bytes([c[12], c[13], c[14], c[15]]),
                })
                .collect();
            RequestKind::Discard { ranges }
        }
        other => RequestKind::Unsupported(other),
    };
    Ok(Request {
        head,
        kind,
        status_addr: status,
    })
}

/// Scatters `data` over `segs` in guest memory (used when applying a completion).
pub fn scatter<M>(mem: &M, segs: &[Segment], data: &[u8]) -> Result<(), vm_memory::GuestMemoryError>
where
    M: GuestMemory + Bytes<GuestAddress, E = vm_memory::GuestMemoryError> + ?Sized,
{
    let mut off = 0usize;
    for s in segs {
        if off >= data.len() {
            break;
        }
        let n = (s.len as usize).min(data.len() - off);
        mem.write_slice(&data[off..off + n], s.addr)?;
        off += n;
    }
    Ok(())
}
