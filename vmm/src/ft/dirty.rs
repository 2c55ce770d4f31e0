//! Which guest pages changed: KVM's dirty log (`KVM_MEM_LOG_DIRTY_PAGES`, `KVM_GET_DIRTY_LOG`,
//! Linux Documentation/virt/kvm/api.rst 4.8 and 4.35) for what the guest's vCPU writes, plus a
//! bitmap of the pages the VMM itself writes on the guest's behalf (virtio completions applied
//! at a landmark: KVM never sees those writes). Pre-copy (ft::precopy) sends memory while the
//! guest runs and then only the pages dirtied since; checkpoints will reuse the same log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::memory::PAGE_SIZE;

#[derive(Debug, thiserror::Error)]
pub enum DirtyError {
    #[error("cannot {what} dirty logging on memory slot {slot}: {source}")]
    Toggle {
        what: &'static str,
        slot: u32,
        source: kvm_ioctls::Error,
    },
    #[error("cannot read the dirty log of memory slot {slot}: {source}")]
    Read {
        slot: u32,
        source: kvm_ioctls::Error,
    },
}

/// One KVM memory slot (the slot numbers `Vm::new` gave the RAM regions, in order).
struct Slot {
    slot: u32,
    gpa: u64,
    size: u64,
    host: u64,
    /// Pages the VMM wrote, one bit per page.
    user: Vec<AtomicU64>,
}

/// The dirty pages of each slot: (first gpa, bitmap with one bit per 4 KiB page).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirtyPages {
    slots: Vec<(u64, Vec<u64>)>,
}

impl DirtyPages {
    /// Every page of `mem` (the first round of a pre-copy uses `data_extents` instead).
    pub fn all(mem: &GuestMemoryMmap) -> Self {
        let slots = mem
            .iter()
            .map(|r| {
                let pages = r.len() / PAGE_SIZE;
                let mut bits = vec![u64::MAX; pages.div_ceil(64) as usize];
                if !pages.is_multiple_of(64) {
                    if let Some(last) = bits.last_mut() {
                        *last = (1u64 << (pages % 64)) - 1;
                    }
                }
                (r.start_addr().raw_value(), bits)
            })
            .collect();
        DirtyPages { slots }
    }

    pub fn pages(&self) -> u64 {
        self.slots
            .iter()
            .flat_map(|(_, b)| b.iter())
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    pub fn bytes(&self) -> u64 {
        self.pages() * PAGE_SIZE
    }

    /// Adds the pages of `other` (same memory layout).
    pub fn merge(&mut self, other: &DirtyPages) {
        if self.slots.is_empty() {
            self.slots = other.slots.clone();
            return;
        }
        for ((_, mine), (_, theirs)) in self.slots.iter_mut().zip(&other.slots) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a |= b;
            }
        }
    }

    /// Runs of contiguous dirty pages as (gpa, pages), each at most `max_pages` long, in
    /// address order.
    pub fn runs(&self, max_pages: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for (base, bits) in &self.slots {
            let mut run: Option<(u64, u64)> = None;
            for (w, &word) in bits.iter().enumerate() {
                if word == 0 && run.is_none() {
                    continue;
                }
                for bit in 0..64 {
                    let page = w as u64 * 64 + bit;
                    let dirty = word & (1 << bit) != 0;
                    match (&mut run, dirty) {
                        (Some((_, n)), true) if *n < max_pages => *n += 1,
                        (Some(r), true) => {
                            out.push(*r);
                            run = Some((base + page * PAGE_SIZE, 1));
                        }
                        (None, true) => run = Some((base + page * PAGE_SIZE, 1)),
                        (Some(r), false) => {
                            out.push(*r);
                            run = None;
                        }
                        (None, false) => {}
                    }
                }
            }
            out.extend(run);
        }
        out
    }
}

/// The dirty log of one VM's RAM.
pub struct DirtyLog {
    vm: Arc<VmFd>,
    slots: Vec<Slot>,
    on: AtomicBool,
}

impl DirtyLog {
    pub fn new(vm: Arc<VmFd>, mem: &GuestMemoryMmap) -> Self {
        let slots = mem
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let pages = r.len() / PAGE_SIZE;
                Slot {
                    // One slot per region: a handful, far below u32::MAX.
                    slot: u32::try_from(i).unwrap_or(u32::MAX),
                    gpa: r.start_addr().raw_value(),
                    size: r.len(),
                    host: r.as_ptr() as u64,
                    user: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
                }
            })
            .collect();
        DirtyLog {
            vm,
            slots,
            on: AtomicBool::new(false),
        }
    }

    fn set_flags(&self, flags: u32, what: &'static str) -> Result<(), DirtyError> {
        for s in &self.slots {
            let region = kvm_userspace_memory_region {
                slot: s.slot,
                flags,
                guest_phys_addr: s.gpa,
                memory_size: s.size,
                userspace_addr: s.host,
            };
            // SAFETY: the same slot, addresses and host mapping `Vm::new` registered (the
            // mapping lives as long as the VM); only the flags change (KVM_MR_FLAGS_ONLY).
            unsafe { self.vm.set_user_memory_region(region) }.map_err(|source| {
                DirtyError::Toggle {
                    what,
                    slot: s.slot,
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Starts logging; whatever was logged before is forgotten.
    pub fn start(&self) -> Result<(), DirtyError> {
        self.set_flags(KVM_MEM_LOG_DIRTY_PAGES, "enable")?;
        self.on.store(true, Ordering::SeqCst);
        self.take().map(|_| ())
    }

    /// Stops logging (KVM stops write-protecting pages).
    pub fn stop(&self) {
        self.on.store(false, Ordering::SeqCst);
        if let Err(e) = self.set_flags(0, "disable") {
            log::warn!("ft: {e}");
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// The VMM wrote `len` bytes at `gpa` on the guest's behalf.
    pub fn mark(&self, gpa: u64, len: usize) {
        if !self.is_on() || len == 0 {
            return;
        }
        let end = gpa.saturating_add(len as u64);
        for s in &self.slots {
            let (lo, hi) = (gpa.max(s.gpa), end.min(s.gpa + s.size));
            if lo >= hi {
                continue;
            }
            for page in (lo - s.gpa) / PAGE_SIZE..=(hi - 1 - s.gpa) / PAGE_SIZE {
                if let Some(w) = s.user.get((page / 64) as usize) {
                    w.fetch_or(1 << (page % 64), Ordering::SeqCst);
                }
            }
        }
    }

    /// The pages dirtied since the last `take` (or `start`), and clears the log. Read a
    /// page only after the `take` that reported it: a write after the take shows in the next.
    pub fn take(&self) -> Result<DirtyPages, DirtyError> {
        let mut slots = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let mut bits = self
                .vm
                .get_dirty_log(s.slot, usize::try_from(s.size).unwrap_or(usize::MAX))
                .map_err(|source| DirtyError::Read {
                    slot: s.slot,
                    source,
                })?;
            bits.resize(s.user.len(), 0);
            for (b, u) in bits.iter_mut().zip(&s.user) {
                *b |= u.swap(0, Ordering::SeqCst);
            }
            slots.push((s.gpa, bits));
        }
        Ok(DirtyPages { slots })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(base: u64, bits: Vec<u64>) -> DirtyPages {
        DirtyPages {
            slots: vec![(base, bits)],
        }
    }

    #[test]
    fn runs_are_contiguous_bounded_and_in_order() {
        // Pages 0-2, 5, and 63-65 (across a word boundary).
        let p = pages(0x10_0000, vec![0b100111 | 1 << 63, 0b11]);
        assert_eq!(p.pages(), 7);
        assert_eq!(
            p.runs(256),
            vec![
                (0x10_0000, 3),
                (0x10_0000 + 5 * 4096, 1),
                (0x10_0000 + 63 * 4096, 3)
            ]
        );
        assert_eq!(
            p.runs(2),
            vec![
                (0x10_0000, 2),
                (0x10_2000, 1),
                (0x10_0000 + 5 * 4096, 1),
                (0x10_0000 + 63 * 4096, 2),
                (0x10_0000 + 65 * 4096, 1)
            ]
        );
    }

    #[test]
    fn merge_adds_pages_and_all_covers_every_page() {
        let mut a = pages(0, vec![0b01, 0]);
        a.merge(&pages(0, vec![0b10, 1]));
        assert_eq!(a, pages(0, vec![0b11, 1]));
        let mut empty = DirtyPages::default();
        empty.merge(&a);
        assert_eq!(empty, a);
        let mem = crate::memory::create_guest_memory(6 << 20).expect("memory");
        let all = DirtyPages::all(&mem);
        assert_eq!(all.bytes(), 6 << 20);
        assert_eq!(all.runs(1 << 20), vec![(0, (6 << 20) / 4096)]);
    }
}
