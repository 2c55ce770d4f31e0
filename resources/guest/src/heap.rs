//! The heap (`alloc`), used by the kv mode only: talc (a binned dlmalloc-style allocator)
//! over the free RAM after the guest image, found in the e820 map.
//!
//! Lock: the guest is single-threaded and its interrupt handlers (ring 0) never allocate,
//! so the lock only has to catch re-entrance, which would be a bug: `NoLock` panics then.

use crate::bootparams::BootParams;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use talc::lock_api::{GuardSend, RawMutex};
use talc::source::Manual;
use talc::TalcLock;

pub struct NoLock(AtomicBool);

// SAFETY: `lock` succeeds only if the lock was free, so there is never more than one owner.
unsafe impl RawMutex for NoLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = NoLock(AtomicBool::new(false));
    type GuardMarker = GuardSend;

    fn lock(&self) {
        assert!(self.try_lock(), "heap re-entered");
    }

    fn try_lock(&self) -> bool {
        !self.0.swap(true, Ordering::Acquire)
    }

    unsafe fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
}

static HEAP_SIZE: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static HEAP: TalcLock<NoLock, Manual> = TalcLock::new(Manual);

/// The RAM below the MMIO window; the shim's identity map covers it.
const RAM_LIMIT: u64 = 0xc000_0000;
/// RAM above the MMIO window starts here; the shim maps it up to `HIGH_LIMIT`.
const HIGH_START: u64 = 0x1_0000_0000;
const HIGH_LIMIT: u64 = 0x2_0000_0000;
/// E820 type of usable RAM.
const E820_RAM: u32 = 1;

extern "C" {
    /// End of the guest image (linker.ld), page aligned.
    static __image_end: u8;
}

/// Gives the heap all RAM from the end of the image to the end of its e820 region (below
/// 3 GiB and below an initrd, if the VMM loaded one), and any RAM between 4 and 8 GiB.
/// Returns (start, size) of the first arena.
pub fn init(params: &BootParams) -> (u64, u64) {
    // SAFETY: only the address of the linker symbol is taken.
    let start = unsafe { &__image_end as *const u8 as u64 };
    let region_end = params
        .e820()
        .filter(|e| e.kind == E820_RAM && e.addr <= start && start < e.addr + e.size)
        .map(|e| e.addr + e.size)
        .next()
        .unwrap_or(start);
    let mut end = region_end.min(RAM_LIMIT);
    if let Some((addr, _)) = params.ramdisk() {
        if addr >= start {
            end = end.min(addr);
        }
    }
    let size = end.saturating_sub(start);
    // SAFETY: this RAM is unused: above the image, below any initrd, not touched by the VMM
    // after boot (the zero page and command line are below 1 MiB).
    let claimed = unsafe { HEAP.lock().claim(start as *mut u8, size as usize) };
    let mut total = if claimed.is_some() { size } else { 0 };
    // RAM above the MMIO window (guests of more than 3 GiB): a second arena.
    for e in params
        .e820()
        .filter(|e| e.kind == E820_RAM && e.addr >= HIGH_START)
    {
        let end = (e.addr + e.size).min(HIGH_LIMIT);
        if end > e.addr {
            // SAFETY: usable RAM by the e820 map, identity-mapped by the shim, never used by
            // the VMM or the image (both live below 4 GiB).
            let high = unsafe {
                HEAP.lock()
                    .claim(e.addr as *mut u8, (end - e.addr) as usize)
            };
            if high.is_some() {
                total += end - e.addr;
            }
        }
    }
    HEAP_SIZE.store(total, Ordering::Relaxed);
    (start, size)
}

/// Bytes given to the heap by `init` (0 if there was no usable RAM).
pub fn size() -> u64 {
    HEAP_SIZE.load(Ordering::Relaxed)
}
