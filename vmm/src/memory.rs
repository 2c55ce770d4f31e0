//! Guest memory: one memfd shared by all RAM regions, so that vhost-user backends can map the
//! same pages (vhost-user `SET_MEM_TABLE` passes this fd with each region's offset).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;

use sha2::{Digest, Sha256};
use vm_memory::{
    Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion, MemoryRegionAddress,
};

use crate::arch::x86_64::layout::ram_ranges;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory size must be a non-zero multiple of 2 MiB, got {0} bytes")]
    BadSize(u64),
    #[error("memfd_create failed: {0}")]
    Memfd(std::io::Error),
    #[error("cannot size the guest memory file: {0}")]
    SetLen(std::io::Error),
    #[error("cannot map guest memory: {0}")]
    Map(vm_memory::mmap::FromRangesError),
}

/// Creates `size` bytes of guest RAM laid out by `layout::ram_ranges`, backed by a memfd.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if size == 0 || !size.is_multiple_of(2 << 20) {
        return Err(MemoryError::BadSize(size));
    }
    let name = CString::new("guest-ram").map_err(|_| MemoryError::BadSize(size))?;
    // SAFETY: `name` is a valid NUL-terminated string; memfd_create has no other inputs and
    // returns either a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(MemoryError::SetLen)?;
    let file = std::sync::Arc::new(file);

    let regions = ram_ranges(size)
        .into_iter()
        .scan(0u64, |offset, (start, len)| {
            let region = (
                GuestAddress(start),
                len as usize,
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

/// Calls `f(gpa, bytes)` for every piece of guest RAM of at most `chunk` bytes, in address
/// order (state transfer, digests).
pub fn for_each_chunk(
    mem: &GuestMemoryMmap,
    chunk: usize,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut buf = vec![0u8; chunk];
    for region in mem.iter() {
        let mut off = 0u64;
        while off < region.len() {
            let n = chunk.min((region.len() - off) as usize);
            region
                .read_slice(&mut buf[..n], MemoryRegionAddress(off))
                .map_err(|e| format!("cannot read guest memory: {e}"))?;
            f(region.start_addr().raw_value() + off, &buf[..n])?;
            off += n as u64;
        }
    }
    Ok(())
}

/// SHA-256 of all guest RAM in address order.
pub fn ram_digest(mem: &GuestMemoryMmap) -> Result<[u8; 32], String> {
    let mut digest = Sha256::new();
    for_each_chunk(mem, 1 << 20, |_, bytes| {
        digest.update(bytes);
        Ok(())
    })?;
    Ok(digest.finalize().into())
}

/// Sets all guest RAM to zero.
pub fn zero_ram(mem: &GuestMemoryMmap) -> Result<(), String> {
    let zeros = vec![0u8; 1 << 20];
    for region in mem.iter() {
        let mut off = 0u64;
        while off < region.len() {
            let n = zeros.len().min((region.len() - off) as usize);
            region
                .write_slice(&zeros[..n], MemoryRegionAddress(off))
                .map_err(|e| format!("cannot write guest memory: {e}"))?;
            off += n as u64;
        }
    }
    Ok(())
}

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
            Ok(())
        })
        .expect("chunks");
        assert_eq!(seen, ram_size(&mem));
        zero_ram(&mem).expect("zero");
        assert_eq!(ram_digest(&mem).expect("digest"), clean);
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
