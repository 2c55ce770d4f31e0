//! virtio-net driver (virtio 1.2 section 5.1): one receive and one transmit queue, no
//! offloads, no mergeable buffers. Features: VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC and
//! VIRTIO_NET_F_STATUS when offered.
//!
//! Each frame is preceded by the 12-byte `struct virtio_net_hdr` (5.1.6: 12 bytes because
//! VERSION_1 includes num_buffers); all zero on transmit, ignored on receive. Receive and
//! transmit buffers are static, 2 KiB each (>= 12 + 1514), one per descriptor: buffer i
//! always belongs to descriptor i. Receive buffers are all posted at start and re-posted as
//! soon as the network stack has consumed them.
//!
//! The smoltcp `phy::Device` implementation is in `crate::net::phy`.

use super::mmio::{Transport, DEVICE_NET};
use super::queue::{Virtqueue, DESC_F_WRITE};
use core::ptr::addr_of_mut;

/// Feature bits (5.1.3).
const F_MAC: u64 = 1 << 5;
const F_STATUS: u64 = 1 << 16;
/// Configuration space (5.1.4): mac[6] at 0, status u16 at 6 (bit 0: VIRTIO_NET_S_LINK_UP).
const CFG_MAC: usize = 0;
const CFG_STATUS: usize = 6;
const S_LINK_UP: u16 = 1;

/// Queue indices (5.1.2) and static queue memory slots.
const RX_QUEUE: u32 = 0;
const TX_QUEUE: u32 = 1;
const RX_SLOT: usize = 0;
const TX_SLOT: usize = 1;

/// `struct virtio_net_hdr` with VERSION_1 (5.1.6).
pub const HDR_LEN: usize = 12;
pub const BUF_SIZE: usize = 2048;
/// Ethernet frame without FCS: 14-byte header + 1500-byte MTU.
pub const MAX_FRAME: usize = 1514;
/// Queue entries used at most (and buffers allocated) per direction.
const MAX_BUFS: usize = 128;

#[repr(C, align(2048))]
pub struct Buf(pub [u8; BUF_SIZE]);

static mut RX_BUFS: [Buf; MAX_BUFS] = [const { Buf([0; BUF_SIZE]) }; MAX_BUFS];
static mut TX_BUFS: [Buf; MAX_BUFS] = [const { Buf([0; BUF_SIZE]) }; MAX_BUFS];

pub fn rx_buf(id: u16) -> *mut Buf {
    // SAFETY: only the address is taken; ids are < MAX_BUFS (queue size is capped).
    unsafe { addr_of_mut!(RX_BUFS[id as usize]) }
}

pub fn tx_buf(id: u16) -> *mut Buf {
    // SAFETY: as for rx_buf.
    unsafe { addr_of_mut!(TX_BUFS[id as usize]) }
}

pub struct VirtioNet {
    pub transport: Transport,
    pub mac: [u8; 6],
    pub rx: Virtqueue,
    pub tx: Virtqueue,
    /// Receive descriptors consumed by the stack, to be re-posted by `flush`.
    pub rx_done: alloc::vec::Vec<u16>,
    /// Transmit buffers were published since the last notification.
    pub tx_kick: bool,
    pub link_up: bool,
}

impl VirtioNet {
    /// Device initialization (3.1.1 and 5.1.5): features, MAC, both queues, all receive
    /// buffers posted, DRIVER_OK, then the first notification.
    pub fn new(mut t: Transport) -> Result<Self, &'static str> {
        assert_eq!(t.device_id, DEVICE_NET);
        let features = t.negotiate(F_MAC | F_STATUS)?;
        let mut mac = [0u8; 6];
        if features & F_MAC != 0 {
            for (i, b) in mac.iter_mut().enumerate() {
                *b = t.config_u8(CFG_MAC + i);
            }
        }
        if mac[0] & 1 != 0 || mac == [0; 6] {
            t.fail();
            return Err("device offers no usable MAC address (VIRTIO_NET_F_MAC)");
        }
        let link_up = features & F_STATUS == 0 || t.config_u16(CFG_STATUS) & S_LINK_UP != 0;
        let cap = MAX_BUFS as u32;
        let rx = Virtqueue::new(RX_SLOT, t.queue_max(RX_QUEUE).min(cap))?;
        let tx = Virtqueue::new(TX_SLOT, t.queue_max(TX_QUEUE).min(cap))?;
        t.setup_queue(RX_QUEUE, &rx)?;
        t.setup_queue(TX_QUEUE, &tx)?;
        let mut net = Self {
            transport: t,
            mac,
            rx,
            tx,
            rx_done: alloc::vec::Vec::new(),
            tx_kick: false,
            link_up,
        };
        while let Some(id) = net.rx.alloc_desc() {
            net.post_rx(id);
        }
        net.transport.driver_ok();
        // 3.1.1: no notification before DRIVER_OK.
        net.transport.notify(RX_QUEUE);
        Ok(net)
    }

    fn post_rx(&mut self, id: u16) {
        self.rx
            .set_desc(id, rx_buf(id) as u64, BUF_SIZE as u32, DESC_F_WRITE, 0);
        self.rx.publish(id);
    }

    /// Releases transmit buffers the device has sent (memory only, no exit).
    pub fn reclaim_tx(&mut self) {
        while let Some((id, _)) = self.tx.pop_used() {
            self.tx.free_chain(id);
        }
    }

    /// Whether received frames are waiting.
    pub fn rx_pending(&self) -> bool {
        self.rx.has_used()
    }

    /// Re-posts consumed receive buffers and sends the pending notifications: at most one
    /// QueueNotify write per queue and call.
    pub fn flush(&mut self) {
        if !self.rx_done.is_empty() {
            while let Some(id) = self.rx_done.pop() {
                self.post_rx(id);
            }
            self.transport.notify(RX_QUEUE);
        }
        if self.tx_kick {
            self.tx_kick = false;
            self.transport.notify(TX_QUEUE);
        }
    }
}
