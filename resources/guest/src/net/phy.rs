//! smoltcp's `phy::Device` on the virtio-net driver. Tokens borrow the driver; frames are
//! read and written in place in the static 2 KiB buffers, after the 12-byte virtio-net
//! header (virtio 1.2 5.1.6). Notifications are not sent here but batched by
//! `VirtioNet::flush` once per main-loop iteration.

use crate::virtio::net::{rx_buf, tx_buf, VirtioNet, BUF_SIZE, HDR_LEN, MAX_FRAME};
use crate::virtio::queue::Virtqueue;
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

pub struct RxToken<'a> {
    frame: &'a [u8],
}

pub struct TxToken<'a> {
    tx: &'a mut Virtqueue,
    kick: &'a mut bool,
}

impl phy::Device for VirtioNet {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        self.reclaim_tx();
        // A receive token comes with a transmit token (for an immediate reply): both are
        // needed, so receiving waits while every transmit buffer is in flight.
        if self.tx.free_count() == 0 {
            return None;
        }
        loop {
            let (id, len) = self.rx.pop_used()?;
            // Re-posted by flush(), after the token (which borrows self) is gone.
            self.rx_done.push(id);
            let len = len as usize;
            if len <= HDR_LEN || len > BUF_SIZE {
                continue; // runt or impossible length: drop
            }
            // SAFETY: the device is done with this buffer (it is in the used ring) and it is
            // not re-posted while the token borrows `self`.
            let buf = unsafe { &(*rx_buf(id)).0 };
            let frame = &buf[HDR_LEN..len];
            return Some((
                RxToken { frame },
                TxToken {
                    tx: &mut self.tx,
                    kick: &mut self.tx_kick,
                },
            ));
        }
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        self.reclaim_tx();
        (self.tx.free_count() > 0).then_some(TxToken {
            tx: &mut self.tx,
            kick: &mut self.tx_kick,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = None;
        // No checksum offload was negotiated: smoltcp computes and verifies everything.
        let mut csum = ChecksumCapabilities::default();
        csum.ipv4 = Checksum::Both;
        csum.tcp = Checksum::Both;
        csum.icmpv4 = Checksum::Both;
        caps.checksum = csum;
        caps
    }
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        assert!(len <= MAX_FRAME, "frame of {len} bytes exceeds the MTU");
        let id = self
            .tx
            .alloc_desc()
            .expect("transmit() checked for a free descriptor");
        // SAFETY: a free descriptor's buffer is not in the device's hands.
        let buf = unsafe { &mut (*tx_buf(id)).0 };
        buf[..HDR_LEN].fill(0); // virtio_net_hdr: no offload, no GSO (5.1.6.2)
        let r = f(&mut buf[HDR_LEN..HDR_LEN + len]);
        self.tx
            .set_desc(id, buf.as_ptr() as u64, (HDR_LEN + len) as u32, 0, 0);
        self.tx.publish(id);
        *self.kick = true;
        r
    }
}
