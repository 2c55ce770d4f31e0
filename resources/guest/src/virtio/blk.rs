//! virtio-blk driver (virtio 1.2 section 5.2), synchronous: one request at a time, the
//! caller waits (in `hlt`) for its completion. Features: VIRTIO_F_VERSION_1, and when
//! offered VIRTIO_BLK_F_FLUSH (needed for durability), VIRTIO_BLK_F_RO (honoured: the log
//! is opened read-only), VIRTIO_BLK_F_SIZE_MAX (requests are split to respect it),
//! VIRTIO_BLK_F_SEG_MAX and VIRTIO_BLK_F_BLK_SIZE (read for information; every request has
//! one data segment and 512-byte sector granularity is always valid, 5.2.5).
//!
//! A request is a descriptor chain (5.2.6): the 16-byte header (type, reserved, sector),
//! the data buffer (device-writable for reads), the 1-byte status (device-writable).

use super::mmio::{Transport, DEVICE_BLK};
use super::queue::{Virtqueue, DESC_F_NEXT, DESC_F_WRITE};
use crate::arch::syscall::idle;
use crate::clock::Clock;
use core::ptr::addr_of_mut;
use guestlib::kv::log::{Disk, DiskError, SECTOR};

/// Feature bits (5.2.3).
const F_SIZE_MAX: u64 = 1 << 1;
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
/// Configuration space (5.2.4).
const CFG_CAPACITY: usize = 0;
const CFG_SIZE_MAX: usize = 8;
const CFG_SEG_MAX: usize = 12;
const CFG_BLK_SIZE: usize = 20;

/// Request types and status values (5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const S_OK: u8 = 0;

const QUEUE: u32 = 0;
const SLOT: usize = 2;
/// Largest data segment per request unless the device's size_max is smaller.
const MAX_CHUNK: usize = 1 << 20;
/// A request that takes longer than this is reported as an I/O error.
const TIMEOUT_SECS: u64 = 30;

/// Header and status of the one request in flight (the device reads/writes them by DMA).
#[repr(C, align(16))]
struct ReqMem {
    header: [u8; 16],
    status: u8,
}

static mut REQ: ReqMem = ReqMem {
    header: [0; 16],
    status: 0,
};

pub struct VirtioBlk {
    pub transport: Transport,
    q: Virtqueue,
    clock: Clock,
    pub capacity: u64,
    pub read_only: bool,
    pub has_flush: bool,
    pub blk_size: Option<u32>,
    pub seg_max: Option<u32>,
    max_chunk: usize,
}

impl VirtioBlk {
    /// Device initialization (3.1.1, 5.2.5).
    pub fn new(mut t: Transport, clock: Clock) -> Result<Self, &'static str> {
        assert_eq!(t.device_id, DEVICE_BLK);
        let f = t.negotiate(F_FLUSH | F_RO | F_SIZE_MAX | F_SEG_MAX | F_BLK_SIZE)?;
        let capacity = t.config_u64(CFG_CAPACITY);
        let opt = |bit: u64, off: usize| (f & bit != 0).then(|| t.config_u32(off));
        let size_max = opt(F_SIZE_MAX, CFG_SIZE_MAX);
        let seg_max = opt(F_SEG_MAX, CFG_SEG_MAX);
        let blk_size = opt(F_BLK_SIZE, CFG_BLK_SIZE);
        let max_chunk = match size_max {
            Some(m) if (m as usize) < MAX_CHUNK => (m as usize / SECTOR * SECTOR).max(SECTOR),
            _ => MAX_CHUNK,
        };
        let q = Virtqueue::new(SLOT, t.queue_max(QUEUE))?;
        if q.size() < 3 {
            t.fail();
            return Err("request queue too small (3 descriptors needed)");
        }
        t.setup_queue(QUEUE, &q)?;
        t.driver_ok();
        Ok(Self {
            transport: t,
            q,
            clock,
            capacity,
            read_only: f & F_RO != 0,
            has_flush: f & F_FLUSH != 0,
            blk_size,
            seg_max,
            max_chunk,
        })
    }

    /// Submits one request and waits for it. `data` is (address, length, device writes).
    fn request(
        &mut self,
        kind: u32,
        sector: u64,
        data: Option<(u64, usize, bool)>,
    ) -> Result<(), u8> {
        // SAFETY: no request is in flight, so the device does not access REQ now.
        let req = unsafe { &mut *addr_of_mut!(REQ) };
        req.header[0..4].copy_from_slice(&kind.to_le_bytes());
        req.header[4..8].copy_from_slice(&0u32.to_le_bytes());
        req.header[8..16].copy_from_slice(&sector.to_le_bytes());
        req.status = 0xff;
        let hdr_addr = req.header.as_ptr() as u64;
        let status_addr = &req.status as *const u8 as u64;

        let d0 = self.q.alloc_desc().expect("blk queue has free descriptors");
        let d_status = self.q.alloc_desc().expect("blk queue has free descriptors");
        match data {
            Some((addr, len, device_writes)) => {
                let d1 = self.q.alloc_desc().expect("blk queue has free descriptors");
                self.q.set_desc(d0, hdr_addr, 16, DESC_F_NEXT, d1);
                let flags = DESC_F_NEXT | if device_writes { DESC_F_WRITE } else { 0 };
                self.q.set_desc(d1, addr, len as u32, flags, d_status);
            }
            None => self.q.set_desc(d0, hdr_addr, 16, DESC_F_NEXT, d_status),
        }
        self.q.set_desc(d_status, status_addr, 1, DESC_F_WRITE, 0);
        self.q.publish(d0);
        self.transport.notify(QUEUE);

        let deadline = self.clock.ticks() + TIMEOUT_SECS * self.clock.hz();
        loop {
            self.transport.ack_interrupt();
            if let Some((id, _)) = self.q.pop_used() {
                assert_eq!(id, d0, "virtio-blk completed an unknown request");
                self.q.free_chain(id);
                break;
            }
            if self.clock.ticks() >= deadline {
                return Err(0xfe);
            }
            // Nothing yet: wait for the completion interrupt (or a timer tick).
            idle();
        }
        // SAFETY: the device has completed the request and no longer writes REQ.
        let status = unsafe { addr_of_mut!(REQ.status).read_volatile() };
        if status == S_OK {
            Ok(())
        } else {
            Err(status)
        }
    }

    /// Reads or writes `len` bytes at `addr` from `sector` on, in chunks of max_chunk.
    fn transfer(
        &mut self,
        op: &'static str,
        sector: u64,
        addr: u64,
        len: usize,
    ) -> Result<(), DiskError> {
        assert!(
            len.is_multiple_of(SECTOR),
            "{op} of {len} bytes: not whole sectors"
        );
        let (kind, device_writes) = if op == "read" {
            (T_IN, true)
        } else {
            (T_OUT, false)
        };
        let mut done = 0;
        while done < len {
            let n = (len - done).min(self.max_chunk);
            let s = sector + (done / SECTOR) as u64;
            if s + (n / SECTOR) as u64 > self.capacity {
                return Err(DiskError {
                    op,
                    sector: s,
                    status: 0xfd,
                });
            }
            self.request(kind, s, Some((addr + done as u64, n, device_writes)))
                .map_err(|status| DiskError {
                    op,
                    sector: s,
                    status,
                })?;
            done += n;
        }
        Ok(())
    }
}

impl Disk for VirtioBlk {
    fn sectors(&self) -> u64 {
        self.capacity
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.transfer("read", sector, buf.as_mut_ptr() as u64, buf.len())
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.transfer("write", sector, buf.as_ptr() as u64, buf.len())
    }

    /// VIRTIO_BLK_T_FLUSH; without VIRTIO_BLK_F_FLUSH the device is taken as write-through
    /// (5.2.6.2) and this does nothing.
    fn flush(&mut self) -> Result<(), DiskError> {
        if !self.has_flush {
            return Ok(());
        }
        self.request(T_FLUSH, 0, None).map_err(|status| DiskError {
            op: "flush",
            sector: 0,
            status,
        })
    }
}
