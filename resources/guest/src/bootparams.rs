//! The Linux "zero page" (`struct boot_params`, Linux Documentation/arch/x86/zero-page.rst
//! and boot.rst) whose address the VMM passes in RSI. Everything in the first 4 GiB is
//! identity-mapped and user-accessible, so ring 3 reads it in place.

use core::ptr::read_unaligned;

/// boot_params.hdr.cmd_line_ptr: u32 physical address of the NUL-terminated command line.
const CMD_LINE_PTR: usize = 0x228;
/// Upper bound on the command-line length, in case the NUL is missing. (hdr.cmdline_size is
/// the *kernel's* limit, advertised to the boot loader, so it is not consulted here.)
const CMDLINE_MAX: usize = 64 * 1024;

/// A validated pointer to the zero page.
#[derive(Clone, Copy)]
pub struct BootParams {
    base: *const u8,
}

impl BootParams {
    /// # Safety
    /// `addr` must be the address of a boot_params structure that stays valid and unchanged.
    pub unsafe fn new(addr: usize) -> Self {
        Self {
            base: addr as *const u8,
        }
    }

    fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: within the 4 KiB zero page (see `new`).
        unsafe { read_unaligned(self.base.add(offset).cast::<u32>()) }
    }

    /// The kernel command line (without the NUL); empty if the VMM passed none.
    pub fn cmdline(&self) -> &'static [u8] {
        let ptr = self.read_u32(CMD_LINE_PTR) as usize as *const u8;
        if ptr.is_null() {
            return &[];
        }
        let mut len = 0;
        // SAFETY: the VMM put a NUL-terminated string there; the scan also stops at
        // CMDLINE_MAX.
        unsafe {
            while len < CMDLINE_MAX && *ptr.add(len) != 0 {
                len += 1;
            }
            core::slice::from_raw_parts(ptr, len)
        }
    }
}

/// boot_params.e820_entries (u8) and boot_params.e820_table (20-byte entries).
const E820_ENTRIES: usize = 0x1e8;
const E820_TABLE: usize = 0x2d0;
const E820_MAX: usize = 128;
/// boot_params.hdr.ramdisk_image / ramdisk_size (u32 each).
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21c;

/// One e820 memory map entry.
#[derive(Clone, Copy, Debug)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    /// 1 = usable RAM.
    pub kind: u32,
}

impl BootParams {
    fn read_u64(&self, offset: usize) -> u64 {
        // SAFETY: within the 4 KiB zero page (see `new`).
        unsafe { read_unaligned(self.base.add(offset).cast::<u64>()) }
    }

    /// The e820 memory map the VMM passed.
    pub fn e820(&self) -> impl Iterator<Item = E820Entry> + '_ {
        // SAFETY: within the zero page.
        let n = usize::from(unsafe { *self.base.add(E820_ENTRIES) }).min(E820_MAX);
        (0..n).map(move |i| {
            let off = E820_TABLE + 20 * i;
            E820Entry {
                addr: self.read_u64(off),
                size: self.read_u64(off + 8),
                kind: self.read_u32(off + 16),
            }
        })
    }

    /// The initrd, if the VMM loaded one: (address, size).
    pub fn ramdisk(&self) -> Option<(u64, u64)> {
        let (addr, size) = (self.read_u32(RAMDISK_IMAGE), self.read_u32(RAMDISK_SIZE));
        (size != 0).then_some((u64::from(addr), u64::from(size)))
    }
}
