//! The driver side of one split virtqueue (virtio 1.2, section 2.7) laid out in guest memory.

use std::collections::HashMap;
use std::sync::atomic::{fence, Ordering};

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::memory::GuestMem;
use crate::HarnessError;

/// `VIRTQ_DESC_F_NEXT`.
pub const DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE` (device-writable).
pub const DESC_F_WRITE: u16 = 2;
/// `VIRTQ_DESC_F_INDIRECT`.
pub const DESC_F_INDIRECT: u16 = 4;

/// One buffer of a descriptor chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// Guest physical address (need not be inside guest memory: tests may lie).
    pub addr: u64,
    pub len: u32,
    /// Device-writable (`VIRTQ_DESC_F_WRITE`).
    pub writable: bool,
}

impl Desc {
    /// A device-readable buffer.
    pub fn readable(addr: GuestAddress, len: u32) -> Self {
        Desc {
            addr: addr.0,
            len,
            writable: false,
        }
    }
    /// A device-writable buffer.
    pub fn writable(addr: GuestAddress, len: u32) -> Self {
        Desc {
            addr: addr.0,
            len,
            writable: true,
        }
    }
}

/// One used-ring element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedElem {
    /// Head descriptor index of the chain.
    pub id: u32,
    /// Bytes the device wrote into the chain's writable buffers.
    pub len: u32,
}

/// Driver-side state of a split virtqueue.
pub struct DriverQueue {
    pub size: u16,
    pub desc: GuestAddress,
    pub avail: GuestAddress,
    pub used: GuestAddress,
    pub kick: EventFd,
    pub call: EventFd,
    pub(crate) event_idx: bool,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
    avail_idx: u16,
    last_used: u16,
}

impl DriverQueue {
    /// Lays out a queue of `size` entries in `mem` (page-aligned rings).
    pub fn new(mem: &mut GuestMem, size: u16) -> Result<Self, HarnessError> {
        if size == 0 || !size.is_power_of_two() {
            return Err(HarnessError::Setup(format!("bad queue size {size}")));
        }
        let n = u64::from(size);
        let desc = mem.alloc(16 * n, 4096)?;
        let avail = mem.alloc(6 + 2 * n, 4096)?;
        let used = mem.alloc(6 + 8 * n, 4096)?;
        Ok(DriverQueue {
            size,
            desc,
            avail,
            used,
            kick: EventFd::new(EFD_NONBLOCK)?,
            call: EventFd::new(EFD_NONBLOCK)?,
            event_idx: false,
            free: (0..size).rev().collect(),
            chains: HashMap::new(),
            avail_idx: 0,
            last_used: 0,
        })
    }

    /// Writes descriptor `index` of the table verbatim.
    pub fn write_desc(
        &self,
        mem: &GuestMem,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result<(), HarnessError> {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&next.to_le_bytes());
        let at = GuestAddress(self.desc.0 + 16 * u64::from(index % self.size));
        mem.write(at, &b)
    }

    /// Writes `descs` as a chain into free descriptors and publishes it. Returns the head.
    pub fn add_chain(&mut self, mem: &GuestMem, descs: &[Desc]) -> Result<u16, HarnessError> {
        if descs.is_empty() || descs.len() > self.free.len() {
            return Err(HarnessError::QueueFull);
        }
        let at = self.free.len() - descs.len();
        let idx: Vec<u16> = self.free.split_off(at).into_iter().rev().collect();
        for (i, d) in descs.iter().enumerate() {
            let mut flags = if d.writable { DESC_F_WRITE } else { 0 };
            let next = match idx.get(i + 1) {
                Some(&n) => {
                    flags |= DESC_F_NEXT;
                    n
                }
                None => 0,
            };
            self.write_desc(mem, idx[i], d.addr, d.len, flags, next)?;
        }
        let head = idx[0];
        self.chains.insert(head, idx);
        self.publish(mem, head)?;
        Ok(head)
    }

    /// Publishes `head` in the avail ring (the descriptor table is not checked).
    pub fn publish(&mut self, mem: &GuestMem, head: u16) -> Result<(), HarnessError> {
        let slot = GuestAddress(self.avail.0 + 4 + 2 * u64::from(self.avail_idx % self.size));
        mem.write(slot, &head.to_le_bytes())?;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        fence(Ordering::SeqCst);
        mem.mmap()
            .store(
                self.avail_idx.to_le(),
                GuestAddress(self.avail.0 + 2),
                Ordering::Release,
            )
            .map_err(|e| HarnessError::Memory(e.to_string()))
    }

    /// The device's used index, read from guest memory.
    pub fn used_idx(&self, mem: &GuestMem) -> Result<u16, HarnessError> {
        mem.mmap()
            .load::<u16>(GuestAddress(self.used.0 + 2), Ordering::Acquire)
            .map(u16::from_le)
            .map_err(|e| HarnessError::Memory(e.to_string()))
    }

    /// Next avail index the driver will publish.
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// Number of used entries consumed so far (mod 2^16).
    pub fn last_used(&self) -> u16 {
        self.last_used
    }

    /// Consumes the new used entries, frees their descriptors and (with EVENT_IDX) asks to
    /// be notified of the next one.
    pub fn pop_used(&mut self, mem: &GuestMem) -> Result<Vec<UsedElem>, HarnessError> {
        let used_idx = self.used_idx(mem)?;
        let mut out = Vec::new();
        while self.last_used != used_idx {
            let at = GuestAddress(self.used.0 + 4 + 8 * u64::from(self.last_used % self.size));
            let b = mem.read(at, 8)?;
            let e = UsedElem {
                id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                len: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            };
            if let Some(idx) = u16::try_from(e.id)
                .ok()
                .and_then(|h| self.chains.remove(&h))
            {
                self.free.extend(idx);
            }
            out.push(e);
            self.last_used = self.last_used.wrapping_add(1);
        }
        if self.event_idx {
            let used_event = GuestAddress(self.avail.0 + 4 + 2 * u64::from(self.size));
            mem.write(used_event, &self.last_used.to_le_bytes())?;
            fence(Ordering::SeqCst);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the device: writes a used element and bumps the used index.
    fn device_use(mem: &GuestMem, q: &DriverQueue, slot: u16, id: u32, len: u32) {
        let at = GuestAddress(q.used.0 + 4 + 8 * u64::from(slot % q.size));
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&id.to_le_bytes());
        b[4..8].copy_from_slice(&len.to_le_bytes());
        mem.write(at, &b).unwrap();
        mem.write(GuestAddress(q.used.0 + 2), &(slot + 1).to_le_bytes())
            .unwrap();
    }

    #[test]
    fn chains_are_laid_out_published_and_recycled() {
        let mut mem = GuestMem::new(1 << 20).unwrap();
        let mut q = DriverQueue::new(&mut mem, 4).unwrap();
        let buf = mem.alloc(64, 8).unwrap();
        let head = q
            .add_chain(
                &mem,
                &[
                    Desc::readable(buf, 16),
                    Desc::writable(GuestAddress(buf.0 + 16), 1),
                ],
            )
            .unwrap();
        // Descriptor table: head -> next, flags.
        let d = mem
            .read(GuestAddress(q.desc.0 + 16 * u64::from(head)), 16)
            .unwrap();
        assert_eq!(u64::from_le_bytes(d[0..8].try_into().unwrap()), buf.0);
        assert_eq!(u32::from_le_bytes(d[8..12].try_into().unwrap()), 16);
        assert_eq!(
            u16::from_le_bytes(d[12..14].try_into().unwrap()),
            DESC_F_NEXT
        );
        let next = u16::from_le_bytes(d[14..16].try_into().unwrap());
        let d2 = mem
            .read(GuestAddress(q.desc.0 + 16 * u64::from(next)), 16)
            .unwrap();
        assert_eq!(
            u16::from_le_bytes(d2[12..14].try_into().unwrap()),
            DESC_F_WRITE
        );
        // Avail ring: idx 1, ring[0] = head.
        let a = mem.read(q.avail, 6).unwrap();
        assert_eq!(u16::from_le_bytes([a[2], a[3]]), 1);
        assert_eq!(u16::from_le_bytes([a[4], a[5]]), head);
        // Only two descriptors left out of four.
        assert!(matches!(
            q.add_chain(&mem, &[Desc::readable(buf, 1); 3]),
            Err(HarnessError::QueueFull)
        ));
        assert!(q.pop_used(&mem).unwrap().is_empty());
        device_use(&mem, &q, 0, u32::from(head), 1);
        assert_eq!(
            q.pop_used(&mem).unwrap(),
            vec![UsedElem {
                id: u32::from(head),
                len: 1
            }]
        );
        // The chain's descriptors are free again.
        q.add_chain(&mem, &[Desc::readable(buf, 1); 4]).unwrap();
    }

    #[test]
    fn event_idx_publishes_used_event() {
        let mut mem = GuestMem::new(1 << 20).unwrap();
        let mut q = DriverQueue::new(&mut mem, 8).unwrap();
        q.event_idx = true;
        let buf = mem.alloc(8, 8).unwrap();
        let head = q.add_chain(&mem, &[Desc::writable(buf, 8)]).unwrap();
        device_use(&mem, &q, 0, u32::from(head), 8);
        q.pop_used(&mem).unwrap();
        let ue = mem.read(GuestAddress(q.avail.0 + 4 + 2 * 8), 2).unwrap();
        assert_eq!(u16::from_le_bytes([ue[0], ue[1]]), 1);
    }

    #[test]
    fn allocator_respects_bounds_and_alignment() {
        let mut mem = GuestMem::new(8192).unwrap();
        let a = mem.alloc(10, 1).unwrap();
        let b = mem.alloc(10, 4096).unwrap();
        assert_eq!(a.0, 0);
        assert_eq!(b.0, 4096);
        assert!(mem.alloc(8192, 1).is_err());
        let mark = mem.alloc_mark();
        mem.alloc(100, 1).unwrap();
        mem.reset_alloc(mark);
        assert_eq!(mem.alloc_mark(), mark);
        assert!(mem.host_addr(GuestAddress(0)).is_ok());
        assert!(mem.host_addr(GuestAddress(8192)).is_err());
    }
}
