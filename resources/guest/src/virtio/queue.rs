//! Split virtqueues (virtio 1.2 section 2.7): a descriptor table, the driver ("available")
//! ring and the device ("used") ring, in statically allocated memory (guest physical ==
//! virtual: the shim identity-maps RAM, so an address is its own DMA address).
//!
//! No VIRTIO_F_EVENT_IDX, no indirect descriptors: the driver always notifies and takes
//! every interrupt the device sends (avail.flags = 0).

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{fence, Ordering};

/// Largest queue size used (the device's QueueNumMax may be larger; sizes are powers of 2).
pub const MAX_SIZE: usize = 256;
/// Number of statically allocated queues: net receive, net transmit, blk request.
pub const SLOTS: usize = 3;

/// Descriptor flags (2.7.5).
pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;

/// 2.7.5 "The Virtqueue Descriptor Table": 16-byte aligned entries.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// 2.7.6 "The Virtqueue Available Ring" (2-byte alignment).
#[repr(C)]
struct AvailRing {
    flags: u16,
    idx: u16,
    ring: [u16; MAX_SIZE],
    used_event: u16, // only with EVENT_IDX
}

/// 2.7.8 "The Virtqueue Used Ring" (4-byte alignment).
#[repr(C, align(4))]
struct UsedRing {
    flags: u16,
    idx: u16,
    ring: [UsedElem; MAX_SIZE],
    avail_event: u16, // only with EVENT_IDX
}

#[repr(C)]
#[derive(Clone, Copy)]
struct UsedElem {
    id: u32,
    len: u32,
}

/// The memory of one queue: page aligned, which satisfies every ring's alignment (2.7,
/// table "Virtqueue Part Alignment"). With a size below MAX_SIZE the device only uses a
/// prefix of each array, which has the same layout as a smaller ring.
#[repr(C, align(4096))]
struct QueueMem {
    desc: [Desc; MAX_SIZE],
    avail: AvailRing,
    used: UsedRing,
}

/// All queue memory, in .bss (zeroed at boot).
static mut QUEUE_MEM: [QueueMem; SLOTS] = [const {
    QueueMem {
        desc: [Desc {
            addr: 0,
            len: 0,
            flags: 0,
            next: 0,
        }; MAX_SIZE],
        avail: AvailRing {
            flags: 0,
            idx: 0,
            ring: [0; MAX_SIZE],
            used_event: 0,
        },
        used: UsedRing {
            flags: 0,
            idx: 0,
            ring: [UsedElem { id: 0, len: 0 }; MAX_SIZE],
            avail_event: 0,
        },
    }
}; SLOTS];

/// Which slots are taken.
static mut SLOT_USED: [bool; SLOTS] = [false; SLOTS];

/// The driver side of one split virtqueue.
pub struct Virtqueue {
    mem: *mut QueueMem,
    size: u16,
    /// Free descriptor indices (a stack).
    free: alloc::vec::Vec<u16>,
    /// Our copy of avail.idx (the next ring slot to fill).
    avail_idx: u16,
    /// Next used ring entry to consume.
    last_used: u16,
}

impl Virtqueue {
    /// Takes queue memory slot `slot` (each exactly once) for a queue of `device_max`
    /// entries at most: the size is the largest power of two <= min(device_max, MAX_SIZE).
    pub fn new(slot: usize, device_max: u32) -> Result<Self, &'static str> {
        if device_max < 2 {
            return Err("queue is not available (QueueNumMax < 2)");
        }
        let max = device_max.min(MAX_SIZE as u32);
        let size = 1u16 << (31 - max.leading_zeros());
        // SAFETY: single-threaded; each slot is handed out once.
        let mem = unsafe {
            let used = &mut *addr_of_mut!(SLOT_USED);
            assert!(!used[slot], "virtqueue slot {slot} taken twice");
            used[slot] = true;
            addr_of_mut!(QUEUE_MEM[slot])
        };
        let free = (0..size).rev().collect();
        Ok(Self {
            mem,
            size,
            free,
            avail_idx: 0,
            last_used: 0,
        })
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Guest-physical addresses of the descriptor table, driver ring and device ring.
    pub fn addresses(&self) -> (u64, u64, u64) {
        // SAFETY: only addresses are taken.
        unsafe {
            (
                addr_of!((*self.mem).desc) as u64,
                addr_of!((*self.mem).avail) as u64,
                addr_of!((*self.mem).used) as u64,
            )
        }
    }

    /// Number of free descriptors.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Takes a free descriptor.
    pub fn alloc_desc(&mut self) -> Option<u16> {
        self.free.pop()
    }

    /// Fills descriptor `id` (2.7.5): buffer `addr`/`len`, `flags` (DESC_F_WRITE for a
    /// device-writable buffer, DESC_F_NEXT to chain to `next`).
    pub fn set_desc(&mut self, id: u16, addr: u64, len: u32, flags: u16, next: u16) {
        // SAFETY: id < size; the device does not read descriptors that are not available.
        unsafe {
            addr_of_mut!((*self.mem).desc[id as usize]).write_volatile(Desc {
                addr,
                len,
                flags,
                next,
            })
        }
    }

    /// Makes the chain starting at `head` available (2.7.13 "Supplying Buffers to The
    /// Device"): ring entry, write barrier, idx. The caller notifies the device afterwards.
    pub fn publish(&mut self, head: u16) {
        let slot = (self.avail_idx % self.size) as usize;
        // SAFETY: the driver ring belongs to the driver; volatile because the device reads it.
        unsafe { addr_of_mut!((*self.mem).avail.ring[slot]).write_volatile(head) };
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // 2.7.13.3.1: the ring entry must be visible before the index that covers it.
        fence(Ordering::Release);
        // SAFETY: as above.
        unsafe { addr_of_mut!((*self.mem).avail.idx).write_volatile(self.avail_idx) };
        // The index must be visible before the notification (a store to MMIO).
        fence(Ordering::SeqCst);
    }

    /// Whether the device has returned buffers not yet consumed by `pop_used`.
    pub fn has_used(&self) -> bool {
        // SAFETY: the device writes used.idx; a volatile read sees its latest value.
        let idx = unsafe { addr_of!((*self.mem).used.idx).read_volatile() };
        idx != self.last_used
    }

    /// Next used buffer (2.7.14 "Receiving Used Buffers From The Device"): head descriptor
    /// id and the number of bytes the device wrote. The chain stays allocated: the caller
    /// re-posts it or releases it with `free_chain`.
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        if !self.has_used() {
            return None;
        }
        // The ring entry must be read after the index that covers it.
        fence(Ordering::Acquire);
        let slot = (self.last_used % self.size) as usize;
        // SAFETY: an entry the device has published.
        let elem = unsafe { addr_of!((*self.mem).used.ring[slot]).read_volatile() };
        self.last_used = self.last_used.wrapping_add(1);
        let id = u16::try_from(elem.id).ok().filter(|&id| id < self.size);
        Some((
            id.expect("virtio device returned an invalid descriptor id"),
            elem.len,
        ))
    }

    /// Returns the descriptors of the chain starting at `head` to the free list.
    pub fn free_chain(&mut self, head: u16) {
        let mut id = head;
        loop {
            // SAFETY: id < size (checked when the chain was built and by pop_used).
            let d = unsafe { addr_of!((*self.mem).desc[id as usize]).read_volatile() };
            self.free.push(id);
            if d.flags & DESC_F_NEXT == 0 {
                break;
            }
            id = d.next;
        }
    }
}
