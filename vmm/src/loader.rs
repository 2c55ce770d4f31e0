//! Loads the guest kernel (ELF `vmlinux`-style or bzImage), the initrd and the command line,
//! and writes the zero page. Returns the 64-bit entry point.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, ReadVolatile};

use crate::arch::x86_64::boot_params::{
    build_boot_params, write_boot_params, BootInfo, BootParamsError,
};
use crate::arch::x86_64::layout::{
    ram_ranges, CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, MMIO_GAP_START,
};

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel {path} is neither an x86_64 ELF executable nor a bzImage (ELF: {elf}; bzImage: {bzimage})")]
    UnknownFormat {
        path: PathBuf,
        elf: linux_loader::loader::Error,
        bzimage: linux_loader::loader::Error,
    },
    #[error("cannot open initrd {path}: {source}")]
    OpenInitrd {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("initrd {0} does not fit in guest memory")]
    InitrdTooBig(PathBuf),
    #[error("cannot read initrd {path}: {reason}")]
    ReadInitrd { path: PathBuf, reason: String },
    #[error("invalid kernel command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    #[error("cannot write the command line: {0}")]
    WriteCmdline(linux_loader::loader::Error),
    #[error(transparent)]
    BootParams(#[from] BootParamsError),
}

/// The result of loading: where the vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    pub entry: u64,
    pub kernel_end: u64,
}

/// Offset of the 64-bit entry point from the start of a bzImage's protected-mode code
/// (Linux `boot.rst`, "64-bit Boot Protocol": `startup_64` is at load address + 0x200).
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

fn open(path: &Path) -> Result<File, LoaderError> {
    File::open(path).map_err(|source| LoaderError::OpenKernel {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads the kernel at `path`: first as ELF, then as bzImage.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
) -> Result<
    (
        LoadedKernel,
        Option<linux_loader::loader::bootparam::setup_header>,
    ),
    LoaderError,
> {
    let mut file = open(path)?;
    let elf_err = match Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(r) => {
            let loaded = LoadedKernel {
                entry: r.kernel_load.raw_value(),
                kernel_end: r.kernel_end,
            };
            return Ok((loaded, None));
        }
        Err(e) => e,
    };
    let mut file = open(path)?;
    match BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(r) => {
            let loaded = LoadedKernel {
                entry: r.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY_OFFSET,
                kernel_end: r.kernel_end,
            };
            Ok((loaded, r.setup_header))
        }
        Err(bzimage) => Err(LoaderError::UnknownFormat {
            path: path.to_path_buf(),
            elf: elf_err,
            bzimage,
        }),
    }
}

/// Loads the initrd page-aligned at the top of low RAM (below the MMIO gap, and below
/// 2 GiB-1 which older kernels' `initrd_addr_max` allows) and returns `(address, size)`.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> Result<(u64, u32), LoaderError> {
    let mut file = File::open(path).map_err(|source| LoaderError::OpenInitrd {
        path: path.to_path_buf(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| LoaderError::OpenInitrd {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let low_end = mem
        .last_addr()
        .raw_value()
        .min(MMIO_GAP_START - 1)
        .min(0x7fff_ffff)
        + 1;
    let addr = low_end
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end)
        .ok_or_else(|| LoaderError::InitrdTooBig(path.to_path_buf()))?;
    // The boot protocol's ramdisk_size is 32 bits.
    let size32 = u32::try_from(size).map_err(|_| LoaderError::InitrdTooBig(path.to_path_buf()))?;
    let mut slice = mem
        .get_slice(GuestAddress(addr), size32 as usize)
        .map_err(|e| LoaderError::ReadInitrd {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    file.read_exact_volatile(&mut slice)
        .map_err(|e| LoaderError::ReadInitrd {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok((addr, size32))
}

/// Loads everything needed to boot and returns the entry point.
pub fn load_guest(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
) -> Result<LoadedKernel, LoaderError> {
    let (loaded, setup_header) = load_kernel(mem, kernel)?;
    let initrd = initrd
        .map(|p| load_initrd(mem, p, loaded.kernel_end))
        .transpose()?;
    let cmdline = Cmdline::try_from(cmdline, CMDLINE_MAX_SIZE).map_err(LoaderError::Cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cmdline).map_err(LoaderError::WriteCmdline)?;
    let cmdline_len = cmdline
        .as_cstring()
        .map_err(LoaderError::Cmdline)?
        .as_bytes_with_nul()
        .len();
    // At most CMDLINE_MAX_SIZE (checked by Cmdline::try_from above).
    let cmdline_size = u32::try_from(cmdline_len).unwrap_or(u32::MAX);
    let info = BootInfo {
        ram: ram_ranges(mem_size),
        cmdline_size,
        setup_header,
        initrd,
    };
    write_boot_params(mem, &build_boot_params(&info)?)?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::Bytes;

    /// A minimal ELF64 executable: one PT_LOAD segment of `code` at `paddr`, entry at `paddr`.
    pub(crate) fn tiny_elf(paddr: u64, code: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, padding.
        f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&2u16.to_le_bytes()); // e_type = ET_EXEC
        f.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine = EM_X86_64
        f.extend_from_slice(&1u32.to_le_bytes()); // e_version
        f.extend_from_slice(&paddr.to_le_bytes()); // e_entry
        f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        f.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
        f.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
        let offset = 64u64 + 56;
        f.extend_from_slice(&1u32.to_le_bytes()); // p_type = PT_LOAD
        f.extend_from_slice(&5u32.to_le_bytes()); // p_flags = R+X
        f.extend_from_slice(&offset.to_le_bytes()); // p_offset
        f.extend_from_slice(&paddr.to_le_bytes()); // p_vaddr
        f.extend_from_slice(&paddr.to_le_bytes()); // p_paddr
        f.extend_from_slice(&(code.len() as u64).to_le_bytes()); // p_filesz
        f.extend_from_slice(&(code.len() as u64).to_le_bytes()); // p_memsz
        f.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
        f.extend_from_slice(code);
        f
    }

    fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(bytes).expect("write temp file");
        f
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).expect("memory")
    }

    #[test]
    fn elf_segments_land_at_their_physical_address() {
        let code = [0xf4u8, 0xeb, 0xfd]; // hlt; jmp $-1
        let kernel = temp_file(&tiny_elf(0x20_0000, &code));
        let m = mem();
        let loaded =
            load_guest(&m, 16 << 20, kernel.path(), None, "guest.mode=hello").expect("load");
        assert_eq!(loaded.entry, 0x20_0000);
        let mut buf = [0u8; 3];
        m.read_slice(&mut buf, GuestAddress(0x20_0000))
            .expect("read");
        assert_eq!(buf, code);
        let mut cmd = [0u8; 17];
        m.read_slice(&mut cmd, GuestAddress(CMDLINE_START))
            .expect("read cmdline");
        assert_eq!(&cmd, b"guest.mode=hello\0");
    }

    #[test]
    fn garbage_kernel_is_a_clear_error() {
        let kernel = temp_file(&[0x55u8; 4096]);
        let err = load_kernel(&mem(), kernel.path()).expect_err("garbage must not load");
        let text = err.to_string();
        assert!(
            text.contains("neither an x86_64 ELF executable nor a bzImage"),
            "{text}"
        );
    }

    #[test]
    fn missing_kernel_names_the_file() {
        let err = load_kernel(&mem(), Path::new("/nonexistent/vmlinux")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }

    #[test]
    fn elf_below_1mib_is_refused() {
        let kernel = temp_file(&tiny_elf(0x1000, &[0xf4]));
        assert!(load_kernel(&mem(), kernel.path()).is_err());
    }

    #[test]
    fn initrd_goes_to_the_top_of_ram_page_aligned() {
        let m = mem();
        let initrd = temp_file(&[0xabu8; 5000]);
        let (addr, size) = load_initrd(&m, initrd.path(), 0x20_0000).expect("initrd");
        assert_eq!(size, 5000);
        assert_eq!(addr % 4096, 0);
        assert!(addr + 5000 <= 16 << 20);
        assert_eq!(
            m.read_obj::<u8>(GuestAddress(addr + 4999)).expect("read"),
            0xab
        );
    }
}
