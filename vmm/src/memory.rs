//! Guest memory: one memfd shared by all RAM regions, so that vhost-user backends can map the
//! same pages (vhost-user `SET_MEM_TABLE` passes this fd with each region's offset).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

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
    if size == 0 || size % (2 << 20) != 0 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

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
