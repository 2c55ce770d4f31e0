//! The memory regions a frontend names, checked against the files behind them.
//!
//! vhost-user spec, "Memory regions": `SET_MEM_TABLE` (and `ADD_MEM_REG`) give for each
//! region a file descriptor, an offset into it (`mmap_offset`) and a size; the backend maps
//! that range of the file. The library does so without looking at the file, and mapping past
//! the end of a file succeeds: the first access beyond the end raises SIGBUS (mmap(2)),
//! which kills the backend. So every region must lie within its file as fstat(2) reports it,
//! and the file must be a regular file (memfd, tmpfs, hugetlbfs: the kinds of guest RAM; a
//! device or a pipe has no size to check). `SET_LOG_BASE` (the dirty log area, mapped the
//! same way) gets the same check.
//!
//! A file can still be shrunk after the check (ftruncate by the frontend); only a process
//! that passed the peer check can do that, i.e. our own user or root, who can also kill or
//! trace the backend.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;

use vhost::vhost_user::message::{
    FrontendReq, VhostUserLog, VhostUserMemory, VhostUserMemoryRegion, VhostUserSingleMemoryRegion,
};
use vm_memory::ByteValued;

/// A region the backend must not map.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error(
        "memory region {index} (guest {gpa:#x}, {size:#x} bytes at offset {offset:#x} of its \
         file) extends past the end of that file ({file_size:#x} bytes); mapping it would \
         fault on first access"
    )]
    PastEnd {
        index: usize,
        gpa: u64,
        size: u64,
        offset: u64,
        file_size: u64,
    },
    #[error("memory region {index} is backed by a {kind}, not a regular file")]
    NotAFile { index: usize, kind: &'static str },
    #[error("cannot inspect the file of memory region {index}: {source}")]
    Stat { index: usize, source: io::Error },
}

/// Copies a message structure out of `body` at `at` (the body has no alignment guarantee).
fn read<T: ByteValued + Default>(body: &[u8], at: usize) -> Option<T> {
    let mut t = T::default();
    let n = std::mem::size_of::<T>();
    t.as_mut_slice()
        .copy_from_slice(body.get(at..at.checked_add(n)?)?);
    Some(t)
}

fn kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_fifo() {
        "pipe"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

fn check_one(
    index: usize,
    file: &File,
    gpa: u64,
    size: u64,
    offset: u64,
) -> Result<(), RegionError> {
    let meta = file
        .metadata()
        .map_err(|source| RegionError::Stat { index, source })?;
    if !meta.file_type().is_file() {
        return Err(RegionError::NotAFile {
            index,
            kind: kind(meta.file_type()),
        });
    }
    if offset.checked_add(size).is_none_or(|end| end > meta.len()) {
        return Err(RegionError::PastEnd {
            index,
            gpa,
            size,
            offset,
            file_size: meta.len(),
        });
    }
    Ok(())
}

fn check_region(index: usize, r: &VhostUserMemoryRegion, file: &File) -> Result<(), RegionError> {
    // Copies: the structure is packed.
    let (gpa, size, offset) = (r.guest_phys_addr, r.memory_size, r.mmap_offset);
    check_one(index, file, gpa, size, offset)
}

/// Checks the regions of a request from the frontend (`request`, its body and the files
/// sent with it). Requests that map nothing pass; so do malformed ones (wrong sizes, a
/// wrong number of files), which the library refuses itself.
pub fn check(request: u32, body: &[u8], files: &[File]) -> Result<(), RegionError> {
    if request == FrontendReq::SET_MEM_TABLE as u32 {
        let Some(table) = read::<VhostUserMemory>(body, 0) else {
            return Ok(());
        };
        let head = std::mem::size_of::<VhostUserMemory>();
        let each = std::mem::size_of::<VhostUserMemoryRegion>();
        for (index, file) in (0..table.num_regions as usize).zip(files) {
            match read::<VhostUserMemoryRegion>(body, head + index * each) {
                Some(r) => check_region(index, &r, file)?,
                None => return Ok(()),
            }
        }
    } else if request == FrontendReq::ADD_MEM_REG as u32 {
        if let (Some(r), Some(file)) = (read::<VhostUserSingleMemoryRegion>(body, 0), files.first())
        {
            check_region(0, &r, file)?;
        }
    } else if request == FrontendReq::SET_LOG_BASE as u32 {
        if let (Some(log), Some(file)) = (read::<VhostUserLog>(body, 0), files.first()) {
            check_one(0, file, 0, log.mmap_size, log.mmap_offset)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(size: u64) -> File {
        let f = memfd::MemfdOptions::default()
            .close_on_exec(true)
            .create("guard-test")
            .expect("memfd_create")
            .into_file();
        f.set_len(size).expect("set_len");
        f
    }

    fn table(regions: &[(u64, u64, u64)]) -> Vec<u8> {
        let mut b = VhostUserMemory::new(u32::try_from(regions.len()).expect("a few test regions"))
            .as_slice()
            .to_vec();
        for &(gpa, size, offset) in regions {
            b.extend_from_slice(
                VhostUserMemoryRegion::new(gpa, size, 0x7000_0000, offset).as_slice(),
            );
        }
        b
    }

    #[test]
    fn a_region_must_lie_within_its_file() {
        let set = FrontendReq::SET_MEM_TABLE as u32;
        let f = memfd(1 << 20);
        check(set, &table(&[(0, 1 << 20, 0)]), std::slice::from_ref(&f)).expect("exact fit");
        check(
            set,
            &table(&[(0, 1 << 19, 1 << 19)]),
            std::slice::from_ref(&f),
        )
        .expect("tail");
        let short = memfd(4096);
        let two = [f, short];
        match check(set, &table(&[(0, 1 << 20, 0), (1 << 20, 1 << 20, 0)]), &two) {
            Err(RegionError::PastEnd {
                index: 1,
                file_size: 4096,
                ..
            }) => {}
            other => panic!("expected PastEnd for region 1, got {other:?}"),
        }
        assert!(matches!(
            check(set, &table(&[(0, 4096, u64::MAX)]), &two[1..]),
            Err(RegionError::PastEnd { .. })
        ));
        let add = FrontendReq::ADD_MEM_REG as u32;
        let one = VhostUserSingleMemoryRegion::new(0, 8192, 0, 0);
        assert!(matches!(
            check(add, one.as_slice(), &two[1..]),
            Err(RegionError::PastEnd { .. })
        ));
        let log = VhostUserLog::new(8192, 0);
        assert!(matches!(
            check(FrontendReq::SET_LOG_BASE as u32, log.as_slice(), &two[1..]),
            Err(RegionError::PastEnd { .. })
        ));
    }

    #[test]
    fn a_region_must_be_a_regular_file() {
        let dev = File::open("/dev/zero").expect("/dev/zero");
        assert!(matches!(
            check(
                FrontendReq::SET_MEM_TABLE as u32,
                &table(&[(0, 4096, 0)]),
                &[dev]
            ),
            Err(RegionError::NotAFile {
                kind: "character device",
                ..
            })
        ));
        // Requests that map nothing, or that the library refuses anyway, pass.
        check(FrontendReq::SET_VRING_NUM as u32, &[0; 8], &[]).expect("no mapping");
        check(FrontendReq::SET_MEM_TABLE as u32, &[1, 2], &[]).expect("malformed: the library's");
    }
}
