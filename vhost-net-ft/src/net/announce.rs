//! Announcing the guest MAC on the TAP when a frontend starts the rings.
//!
//! After a VM starts, or a backup goes live on another host after failover, the bridges on
//! the way still have the guest MAC on the old port (or nowhere). Like QEMU's
//! `qemu_announce_self` (`announce_self_create` in `net/announce.c`), the backend sends a
//! broadcast RARP "reverse request" whose source is the guest MAC, so every switch learns
//! the port at once instead of after the guest's next transmission. The frame is the same as
//! QEMU's, byte for byte; QEMU repeats it a few times with back-off, this backend sends it
//! once per activation.

use crate::net::config::MacAddr;
use crate::net::hdr::{VirtioNetHdr, VNET_HDR_LEN};

/// EtherType of RARP (`ETH_P_RARP`).
pub const ETH_P_RARP: u16 = 0x8035;
/// Length of the announcement: the Ethernet minimum without FCS, as QEMU pads it.
pub const RARP_FRAME_LEN: usize = 60;

const ARP_HTYPE_ETH: u16 = 1;
const ARP_PTYPE_IP: u16 = 0x0800;
/// RARP "reverse request" (RFC 903), the opcode QEMU uses.
const ARP_OP_RARP_REV: u16 = 3;

/// The RARP announcement for `mac` (Ethernet frame, without virtio-net header).
pub fn rarp_frame(mac: MacAddr) -> [u8; RARP_FRAME_LEN] {
    let m = mac.0;
    let mut f = [0u8; RARP_FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]); // broadcast destination
    f[6..12].copy_from_slice(&m); // source: the guest MAC, which bridges learn
    f[12..14].copy_from_slice(&ETH_P_RARP.to_be_bytes());
    f[14..16].copy_from_slice(&ARP_HTYPE_ETH.to_be_bytes());
    f[16..18].copy_from_slice(&ARP_PTYPE_IP.to_be_bytes());
    f[18] = 6; // hardware address length
    f[19] = 4; // protocol address length
    f[20..22].copy_from_slice(&ARP_OP_RARP_REV.to_be_bytes());
    f[22..28].copy_from_slice(&m); // sender hardware address
                                   // [28..32) sender protocol address 0.0.0.0
    f[32..38].copy_from_slice(&m); // target hardware address
                                   // [38..42) target protocol address 0.0.0.0, [42..60) padding
    f
}

/// The announcement as written to the TAP: a clean virtio-net header, then the frame.
pub fn rarp_packet(mac: MacAddr) -> Vec<u8> {
    let mut p = Vec::with_capacity(VNET_HDR_LEN + RARP_FRAME_LEN);
    p.extend_from_slice(&VirtioNetHdr::default().to_bytes());
    p.extend_from_slice(&rarp_frame(mac));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_matches_qemus_announce_self() {
        let mac = MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0x01]);
        // announce_self_create() in QEMU's net/announce.c for the same MAC.
        let mut want = vec![0xff; 6];
        want.extend_from_slice(&mac.0);
        want.extend_from_slice(&[0x80, 0x35, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x03]);
        want.extend_from_slice(&mac.0);
        want.extend_from_slice(&[0; 4]);
        want.extend_from_slice(&mac.0);
        want.extend_from_slice(&[0; 4]);
        want.resize(60, 0);
        assert_eq!(&rarp_frame(mac)[..], &want[..]);
        let p = rarp_packet(mac);
        assert_eq!(&p[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
        assert_eq!(&p[VNET_HDR_LEN..], &want[..]);
    }
}
