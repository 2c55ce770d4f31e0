//! memfd-backed guest memory that a vhost-user backend can map.

use std::fs::File;

use vm_memory::{
    Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion,
};

use crate::HarnessError;

/// Guest memory: one region `[0, size)` backed by a memfd, plus a bump allocator for test
/// buffers.
pub struct GuestMem {
    mem: GuestMemoryMmap,
    size: u64,
    next: u64,
}

/// A memfd of `size` bytes named `name` (what the frontend shares as guest RAM).
pub(crate) fn memfd(name: &str, size: u64) -> Result<File, HarnessError> {
    let file = memfd::MemfdOptions::default()
        .close_on_exec(true)
        .create(name)
        .map_err(|e| HarnessError::Setup(format!("memfd_create: {e}")))?
        .into_file();
    file.set_len(size)?;
    Ok(file)
}

impl GuestMem {
    /// Creates `size` bytes of zeroed guest memory at guest physical address 0.
    pub fn new(size: u64) -> Result<Self, HarnessError> {
        let file = memfd("vhost-harness-guest", size)?;
        let len =
            usize::try_from(size).map_err(|_| HarnessError::Setup("memory too large".into()))?;
        let mem = GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(0),
            len,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(|e| HarnessError::Setup(format!("cannot map guest memory: {e}")))?;
        Ok(GuestMem { mem, size, next: 0 })
    }

    /// The mapping.
    pub fn mmap(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Allocates `len` bytes aligned to `align` (a power of two) from the bump allocator.
    /// The memory is not zeroed on reuse after [`GuestMem::reset_alloc`].
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<GuestAddress, HarnessError> {
        let align = align.max(1);
        let start = self.next.div_ceil(align) * align;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                HarnessError::Setup(format!("out of guest memory allocating {len} bytes"))
            })?;
        self.next = end;
        Ok(GuestAddress(start))
    }

    /// Current allocation mark (for [`GuestMem::reset_alloc`]).
    pub fn alloc_mark(&self) -> u64 {
        self.next
    }

    /// Frees everything allocated after `mark`.
    pub fn reset_alloc(&mut self, mark: u64) {
        self.next = mark.min(self.next);
    }

    /// Host virtual address of a guest physical address (what vhost-user ring addresses use).
    pub fn host_addr(&self, gpa: GuestAddress) -> Result<u64, HarnessError> {
        let region = self
            .mem
            .find_region(gpa)
            .ok_or_else(|| HarnessError::Setup(format!("{:#x} is not guest memory", gpa.0)))?;
        Ok(region.as_ptr() as u64 + (gpa.raw_value() - region.start_addr().raw_value()))
    }

    pub fn write(&self, addr: GuestAddress, data: &[u8]) -> Result<(), HarnessError> {
        self.mem
            .write_slice(data, addr)
            .map_err(|e| HarnessError::Memory(e.to_string()))
    }

    pub fn read(&self, addr: GuestAddress, len: usize) -> Result<Vec<u8>, HarnessError> {
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, addr)
            .map_err(|e| HarnessError::Memory(e.to_string()))?;
        Ok(v)
    }
}
