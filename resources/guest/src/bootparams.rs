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
        Self { base: addr as *const u8 }
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
