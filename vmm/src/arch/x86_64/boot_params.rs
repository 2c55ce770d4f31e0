//! The zero page ("boot params", Linux `Documentation/arch/x86/zero-page.rst`): E820 memory map,
//! command line pointer, initrd and the setup header fields a boot loader must fill in
//! (`Documentation/arch/x86/boot.rst`, "Details of header fields").

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::layout::*;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
/// `loadflags` bit: the protected-mode code is loaded at 0x100000.
const LOADED_HIGH: u8 = 0x01;
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;
/// The zero page holds at most 128 E820 entries.
const E820_MAX_ENTRIES: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    #[error("too many E820 entries")]
    E820Overflow,
    /// The boot protocol's 32-bit fields (cmd_line_ptr, ramdisk_image) take addresses
    /// below 4 GiB (Linux boot protocol, "The real-mode kernel header").
    #[error("address {0:#x} is above 4 GiB, out of reach of a 32-bit boot-protocol field")]
    AboveFourGiB(u64),
    #[error("cannot write the zero page: {0}")]
    Write(linux_loader::configurator::Error),
}

fn low_u32(addr: u64) -> Result<u32, BootParamsError> {
    u32::try_from(addr).map_err(|_| BootParamsError::AboveFourGiB(addr))
}

/// What the zero page must describe.
#[derive(Clone, Debug, Default)]
pub struct BootInfo {
    /// RAM ranges `(start, size)`, as from `layout::ram_ranges`.
    pub ram: Vec<(u64, u64)>,
    /// Length of the command line including the NUL.
    pub cmdline_size: u32,
    /// The setup header of a bzImage, if the kernel was one.
    pub setup_header: Option<setup_header>,
    /// `(address, size)` of the initrd, if any.
    pub initrd: Option<(u64, u32)>,
}

/// The E820 map: low memory up to the EBDA, then each RAM range from 1 MiB on.
pub fn e820_map(ram: &[(u64, u64)]) -> Vec<boot_e820_entry> {
    let mut map = Vec::new();
    for &(start, size) in ram {
        if start == 0 {
            map.push(boot_e820_entry {
                addr: 0,
                size: EBDA_START,
                r#type: E820_RAM,
            });
            if size > HIMEM_START {
                map.push(boot_e820_entry {
                    addr: HIMEM_START,
                    size: size - HIMEM_START,
                    r#type: E820_RAM,
                });
            }
        } else {
            map.push(boot_e820_entry {
                addr: start,
                size,
                r#type: E820_RAM,
            });
        }
    }
    map
}

/// Builds the zero page for `info`.
pub fn build_boot_params(info: &BootInfo) -> Result<boot_params, BootParamsError> {
    let mut params = boot_params::default();
    if let Some(hdr) = info.setup_header {
        // A bzImage brings its own header; the boot loader fills in its fields below.
        params.hdr = hdr;
    }
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.loadflags |= LOADED_HIGH;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    params.hdr.cmd_line_ptr = low_u32(CMDLINE_START)?;
    params.hdr.cmdline_size = info.cmdline_size;
    if let Some((addr, size)) = info.initrd {
        params.hdr.ramdisk_image = low_u32(addr)?;
        params.hdr.ramdisk_size = size;
    }
    let map = e820_map(&info.ram);
    if map.len() > E820_MAX_ENTRIES {
        return Err(BootParamsError::E820Overflow);
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(map.iter()) {
        *slot = *entry;
    }
    // At most E820_MAX_ENTRIES (128), checked above.
    params.e820_entries = u8::try_from(map.len()).map_err(|_| BootParamsError::E820Overflow)?;
    Ok(params)
}

/// Writes the zero page to `ZERO_PAGE_START`.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    params: &boot_params,
) -> Result<(), BootParamsError> {
    let bp = BootParams::new::<boot_params>(params, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&bp, mem)
        .map_err(BootParamsError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn e820_skips_the_bios_hole() {
        let map = e820_map(&[(0, 64 << 20)]);
        assert_eq!(map.len(), 2);
        assert_eq!((map[0].addr, map[0].size), (0, EBDA_START));
        assert_eq!(
            (map[1].addr, map[1].size),
            (HIMEM_START, (64 << 20) - HIMEM_START)
        );
        assert!(map.iter().all(|e| e.r#type == E820_RAM));
    }

    #[test]
    fn e820_includes_ram_above_4g() {
        let map = e820_map(&ram_ranges(5 << 30));
        assert_eq!(map.len(), 3);
        assert_eq!({ map[2].addr }, MMIO_GAP_END);
        assert_eq!({ map[2].size }, (5 << 30) - MMIO_GAP_START);
    }

    #[test]
    fn zero_page_is_written_where_the_guest_reads_it() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).expect("memory");
        let info = BootInfo {
            ram: vec![(0, 16 << 20)],
            cmdline_size: 12,
            setup_header: None,
            initrd: Some((0x80_0000, 4096)),
        };
        let params = build_boot_params(&info).expect("params");
        write_boot_params(&mem, &params).expect("write");
        // Offsets from Documentation/arch/x86/zero-page.rst and boot.rst.
        let read_u32 = |off: u64| {
            mem.read_obj::<u32>(GuestAddress(ZERO_PAGE_START + off))
                .expect("read")
        };
        let read_u8 = |off: u64| {
            mem.read_obj::<u8>(GuestAddress(ZERO_PAGE_START + off))
                .expect("read")
        };
        assert_eq!(u64::from(read_u32(0x228)), CMDLINE_START, "cmd_line_ptr");
        assert_eq!(read_u32(0x202), KERNEL_HDR_MAGIC, "header magic");
        assert_eq!(read_u32(0x218), 0x80_0000, "ramdisk_image");
        assert_eq!(read_u32(0x21c), 4096, "ramdisk_size");
        assert_eq!(read_u32(0x238), 12, "cmdline_size");
        assert_eq!(read_u8(0x1e8), 2, "e820_entries");
        let second_addr = mem
            .read_obj::<u64>(GuestAddress(ZERO_PAGE_START + 0x2d0 + 20))
            .expect("e820");
        assert_eq!(second_addr, HIMEM_START);
    }
}
