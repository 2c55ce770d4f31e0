//! Test helpers: guest memory and a driver-side split queue (virtio-queue's `MockSplitQueue`).

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Size of the test guest memory (one region at 0).
pub const MEM_SIZE: u64 = 0x20_0000;
/// Where test buffers start (above the rings).
pub const BUF_BASE: u64 = 0x1_0000;
/// Queue size used by the tests.
pub const QSIZE: u16 = 64;

pub fn mem() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).expect("guest memory")
}

/// One descriptor as the test describes it.
#[derive(Clone, Copy, Debug)]
pub struct D {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

pub fn w(addr: u64, len: u32) -> D {
    D {
        addr,
        len,
        write: true,
    }
}

pub fn r(addr: u64, len: u32) -> D {
    D {
        addr,
        len,
        write: false,
    }
}

/// A driver: owns the next free descriptor index.
pub struct Driver<'a> {
    pub vq: MockSplitQueue<'a, GuestMemoryMmap<()>>,
    mem: &'a GuestMemoryMmap<()>,
    next_desc: u16,
}

impl<'a> Driver<'a> {
    pub fn new(mem: &'a GuestMemoryMmap<()>) -> Self {
        Driver {
            vq: MockSplitQueue::new(mem, QSIZE),
            mem,
            next_desc: 0,
        }
    }

    /// The device-side queue.
    pub fn queue(&self) -> Queue {
        self.vq.create_queue().expect("queue")
    }

    /// Makes one chain available; returns its head index.
    pub fn add(&mut self, descs: &[D]) -> u16 {
        let head = self.next_desc;
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let last = i + 1 == descs.len();
                let mut flags = if d.write {
                    VRING_DESC_F_WRITE as u16
                } else {
                    0
                };
                if !last {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                let next = if last { 0 } else { head + i as u16 + 1 };
                RawDescriptor::from(Descriptor::new(d.addr, d.len, flags, next))
            })
            .collect();
        self.vq.add_desc_chains(&raw, head).expect("add chain");
        self.next_desc += descs.len() as u16;
        head
    }

    /// Makes one chain of raw descriptors available, exactly as given (flags and next
    /// included); returns the head index.
    pub fn add_raw(&mut self, descs: &[Descriptor]) -> u16 {
        let head = self.next_desc;
        // add_desc_chains starts a new chain whenever the previous descriptor lacks NEXT, so
        // publish the head alone and write the rest of the table directly.
        let raw: Vec<RawDescriptor> = descs.iter().map(|d| RawDescriptor::from(*d)).collect();
        self.vq.add_desc_chains(&raw[..1], head).expect("add head");
        for (i, d) in raw.iter().enumerate().skip(1) {
            self.vq
                .desc_table()
                .store(head + i as u16, *d)
                .expect("store descriptor");
        }
        self.next_desc += descs.len() as u16;
        head
    }

    /// Makes available a chain whose head points to an indirect table at `table` holding
    /// `descs` (chained in order).
    pub fn add_indirect(&mut self, table: u64, descs: &[D]) -> u16 {
        for (i, d) in descs.iter().enumerate() {
            let last = i + 1 == descs.len();
            let mut flags = if d.write {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let raw = RawDescriptor::from(Descriptor::new(d.addr, d.len, flags, i as u16 + 1));
            self.mem
                .write_obj(raw, GuestAddress(table + 16 * i as u64))
                .expect("indirect table");
        }
        let head = Descriptor::new(
            table,
            16 * descs.len() as u32,
            VRING_DESC_F_INDIRECT as u16,
            0,
        );
        self.add_raw(&[head])
    }

    /// The used ring as (head, len) pairs.
    pub fn used(&self) -> Vec<(u32, u32)> {
        let n = self.vq.used().idx().load();
        (0..n)
            .map(|i| {
                let e = self
                    .vq
                    .used()
                    .ring()
                    .ref_at(i as usize)
                    .expect("used entry")
                    .load();
                (e.id(), e.len())
            })
            .collect()
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, GuestAddress(addr))
            .expect("read");
        v
    }

    pub fn write(&self, addr: u64, data: &[u8]) {
        self.mem
            .write_slice(data, GuestAddress(addr))
            .expect("write");
    }
}

/// An Ethernet frame of `len` bytes with a recognisable pattern.
pub fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}
