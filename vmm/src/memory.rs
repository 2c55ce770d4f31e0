//! Guest memory: one memfd shared by all RAM regions, so that vhost-user backends can map the
//! same pages (vhost-user `SET_MEM_TABLE` passes this fd with each region's offset).

use std::os::fd::AsRawFd;

use sha2::{Digest, Sha256};
use vm_memory::{
    Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress,
};

use crate::arch::x86_64::layout::ram_ranges;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory size must be a non-zero multiple of 2 MiB, got {0} bytes")]
    BadSize(u64),
    #[error("memfd_create failed: {0}")]
    Memfd(memfd::Error),
    #[error("cannot size the guest memory file: {0}")]
    SetLen(std::io::Error),
    #[error("cannot map guest memory: {0}")]
    Map(vm_memory::mmap::FromRangesError),
}

/// An access to guest RAM by the VMM itself (digests, zeroing, snapshots) that failed.
#[derive(Debug, thiserror::Error)]
pub enum RamError {
    #[error("range {gpa:#x}+{len:#x} is not inside guest RAM")]
    Outside { gpa: u64, len: u64 },
    #[error("cannot access guest memory: {0}")]
    Access(#[from] vm_memory::GuestMemoryError),
}

/// Creates `size` bytes of guest RAM laid out by `layout::ram_ranges`, backed by a memfd.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if size == 0 || !size.is_multiple_of(2 << 20) {
        return Err(MemoryError::BadSize(size));
    }
    let file = memfd::MemfdOptions::default()
        .close_on_exec(true)
        .create("guest-ram")
        .map_err(MemoryError::Memfd)?
        .into_file();
    file.set_len(size).map_err(MemoryError::SetLen)?;
    let file = std::sync::Arc::new(file);

    let regions = ram_ranges(size)
        .into_iter()
        .scan(0u64, |offset, (start, len)| {
            let region = (
                GuestAddress(start),
                usize::try_from(len).unwrap_or(usize::MAX),
                Some(FileOffset::from_arc(file.clone(), *offset)),
            );
            *offset += len;
            Some(region)
        });
    GuestMemoryMmap::from_ranges_with_files(regions).map_err(MemoryError::Map)
}

/// Total size of guest RAM.
pub fn ram_size(mem: &GuestMemoryMmap) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

/// The parts of `region` that may hold data, as (offset in the region, length). Guest RAM is
/// a memfd: a page the guest never wrote (or that was punched out by `zero_range`) is a hole
/// and reads as zero, and `lseek(SEEK_DATA/SEEK_HOLE)` finds the holes without touching them
/// (reading a hole through the mapping would allocate it). Without a file, or if the kernel
/// cannot say, the whole region is reported.
pub fn data_extents(region: &GuestRegionMmap) -> Vec<(u64, u64)> {
    let len = region.len();
    let Some(fo) = region.file_offset() else {
        return vec![(0, len)];
    };
    let fd = fo.file().as_raw_fd();
    let base = fo.start();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        // SAFETY: lseek on an fd we own (the memfd outlives `region`); no memory is passed.
        // File offsets inside guest RAM are far below 2^63: the cast to off_t keeps them.
        let data = unsafe { libc::lseek(fd, (base + pos).cast_signed(), libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // only holes from here to the end of the file
            }
            return vec![(0, len)];
        }
        let start = data.cast_unsigned().saturating_sub(base);
        if start >= len {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 {
            len
        } else {
            (hole.cast_unsigned().saturating_sub(base)).min(len)
        };
        if end <= start {
            return vec![(0, len)];
        }
        out.push((start, end - start));
        pos = end;
    }
    out
}

/// Calls `f(gpa, bytes)` for every piece of guest RAM of at most `chunk` bytes, in address
/// order (digests). Pieces that lie in a hole of the memfd are passed as zeros without being
/// read.
pub fn for_each_chunk<E: From<RamError>>(
    mem: &GuestMemoryMmap,
    chunk: usize,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut buf = vec![0u8; chunk];
    let zeros = vec![0u8; chunk];
    for region in mem.iter() {
        let extents = data_extents(region);
        let mut off = 0u64;
        while off < region.len() {
            let n = usize::try_from(region.len() - off).map_or(chunk, |left| chunk.min(left));
            let end = off + n as u64;
            let has_data = extents.iter().any(|&(s, l)| s < end && off < s + l);
            let bytes = if has_data {
                region
                    .read_slice(&mut buf[..n], MemoryRegionAddress(off))
                    .map_err(RamError::from)?;
                &buf[..n]
            } else {
                &zeros[..n]
            };
            f(region.start_addr().raw_value() + off, bytes)?;
            off = end;
        }
    }
    Ok(())
}

/// SHA-256 of all guest RAM in address order.
pub fn ram_digest(mem: &GuestMemoryMmap) -> Result<[u8; 32], RamError> {
    let mut digest = Sha256::new();
    for_each_chunk(mem, 1 << 20, |_, bytes| {
        digest.update(bytes);
        Ok::<(), RamError>(())
    })?;
    Ok(digest.finalize().into())
}

/// Sets `len` bytes of guest RAM at `gpa` to zero; the range must lie in one region. Whole
/// pages are punched out of the memfd (`fallocate(PUNCH_HOLE)`: they read as zero and take
/// no host memory); a partial page at either end is written with zeros.
pub fn zero_range(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> Result<(), RamError> {
    if len == 0 {
        return Ok(());
    }
    let bad = || RamError::Outside { gpa, len };
    let region = mem.find_region(GuestAddress(gpa)).ok_or_else(bad)?;
    let off = gpa - region.start_addr().raw_value();
    if off.checked_add(len).is_none_or(|end| end > region.len()) {
        return Err(bad());
    }
    let page = PAGE_SIZE;
    let first = off.div_ceil(page) * page;
    let last = ((off + len) / page) * page;
    let punched = match region.file_offset() {
        Some(fo) if first < last => {
            // SAFETY: fallocate on the memfd we own, inside its size; no memory is passed.
            // The shared mapping (and KVM's view of it) then reads zeros for those pages.
            let rc = unsafe {
                libc::fallocate(
                    fo.file().as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    (fo.start() + first).cast_signed(),
                    (last - first).cast_signed(),
                )
            };
            rc == 0
        }
        _ => false,
    };
    let write_zeros = |from: u64, to: u64| -> Result<(), RamError> {
        let left = |at: u64| usize::try_from(to - at).unwrap_or(usize::MAX);
        let zeros = vec![0u8; (1usize << 20).min(left(from))];
        let mut at = from;
        while at < to {
            let n = zeros.len().min(left(at));
            region.write_slice(&zeros[..n], MemoryRegionAddress(at))?;
            at += n as u64;
        }
        Ok(())
    };
    if punched {
        write_zeros(off, first.min(off + len))?;
        write_zeros(last.max(off), off + len)?;
    } else {
        write_zeros(off, off + len)?;
    }
    Ok(())
}

/// Sets all guest RAM to zero.
pub fn zero_ram(mem: &GuestMemoryMmap) -> Result<(), RamError> {
    for region in mem.iter() {
        zero_range(mem, region.start_addr().raw_value(), region.len())?;
    }
    Ok(())
}

/// The page size of KVM's dirty log and of pre-copy.
pub const PAGE_SIZE: u64 = 4096;
/// `PAGE_SIZE` for indexing host buffers.
pub const PAGE_BYTES: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_file_backed_and_usable() {
        let mem = create_guest_memory(4 << 20).expect("memory");
        assert_eq!(mem.num_regions(), 1);
        let region = mem.iter().next().expect("region");
        assert!(
            region.file_offset().is_some(),
            "vhost-user needs an fd for every region"
        );
        mem.write_obj(0xdead_beefu32, GuestAddress(0x1000))
            .expect("write");
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1000)).expect("read"),
            0xdead_beef
        );
    }

    #[test]
    fn chunks_cover_all_ram_and_zeroing_changes_the_digest_back() {
        let mem = create_guest_memory(4 << 20).expect("memory");
        let clean = ram_digest(&mem).expect("digest");
        mem.write_obj(7u8, GuestAddress(0x2_0000)).expect("write");
        assert_ne!(ram_digest(&mem).expect("digest"), clean);
        let mut seen = 0u64;
        for_each_chunk(&mem, 3 << 20, |gpa, bytes| {
            assert_eq!(gpa, seen);
            seen += bytes.len() as u64;
            Ok::<(), RamError>(())
        })
        .expect("chunks");
        assert_eq!(seen, ram_size(&mem));
        zero_ram(&mem).expect("zero");
        assert_eq!(ram_digest(&mem).expect("digest"), clean);
    }

    #[test]
    fn holes_are_found_and_zeroing_punches_them_back() {
        let mem = create_guest_memory(8 << 20).expect("memory");
        let region = mem.iter().next().expect("region");
        assert!(data_extents(region).is_empty(), "fresh memory is all hole");
        mem.write_obj(1u8, GuestAddress(0x30_1000)).expect("write");
        let ext = data_extents(region);
        assert!(!ext.is_empty());
        assert!(ext
            .iter()
            .all(|&(s, l)| s <= 0x30_1000 && 0x30_1000 < s + l));
        assert!(ext.iter().map(|e| e.1).sum::<u64>() < 8 << 20);
        // A range with partial pages at both ends: all of it reads zero afterwards.
        mem.write_slice(&[7u8; 3 * 4096], GuestAddress(0x40_0000))
            .expect("write");
        zero_range(&mem, 0x40_0010, 3 * 4096 - 0x20).expect("zero");
        let mut back = [0u8; 3 * 4096];
        mem.read_slice(&mut back, GuestAddress(0x40_0000))
            .expect("read");
        assert_eq!(&back[..0x10], &[7u8; 0x10]);
        assert!(back[0x10..3 * 4096 - 0x10].iter().all(|&b| b == 0));
        assert_eq!(&back[3 * 4096 - 0x10..], &[7u8; 0x10]);
        assert!(
            zero_range(&mem, (8 << 20) - 4096, 8192).is_err(),
            "past the end"
        );
        zero_ram(&mem).expect("zero all");
        assert!(data_extents(mem.iter().next().expect("region")).is_empty());
    }

    #[test]
    fn odd_sizes_are_rejected() {
        assert!(matches!(
            create_guest_memory(0),
            Err(MemoryError::BadSize(0))
        ));
        assert!(matches!(
            create_guest_memory(3 << 19),
            Err(MemoryError::BadSize(_))
        ));
    }
}
