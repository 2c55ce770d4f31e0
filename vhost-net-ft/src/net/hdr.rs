//! The virtio-net header (virtio 1.2, 5.1.6) and frame size limits.
//!
//! With `VIRTIO_F_VERSION_1` every packet on both queues starts with the 12-byte
//! `struct virtio_net_hdr` (including `num_buffers`). The TAP device is configured with
//! `TUNSETVNETHDRSZ 12` and `TUNSETOFFLOAD 0`, so the kernel uses the same 12-byte header
//! format. This backend negotiates no offload, so it does not pass headers through blindly:
//! - TX: the guest's header is parsed and must request nothing (flags 0, `GSO_NONE`); the
//!   frame is then written to the TAP behind a clean all-zero header.
//! - RX: the kernel's header is parsed; `DATA_VALID` is dropped (the guest did not negotiate
//!   `GUEST_CSUM`), anything needing an offload is refused; the guest receives a clean header
//!   whose only non-zero field is `num_buffers = 1`.

use virtio_bindings::virtio_net::{VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_GSO_NONE};

use crate::error::HdrError;

/// Length of the virtio-net header with `VIRTIO_F_VERSION_1`.
pub const VNET_HDR_LEN: usize = 12;
/// Length of an Ethernet header; shorter frames are refused.
pub const ETH_HLEN: usize = 14;
/// Largest Ethernet frame (without virtio-net header) accepted in either direction.
pub const MAX_FRAME_LEN: usize = 65535;
/// Largest frame without segmentation offload and without a VLAN tag (MTU 1500).
pub const MAX_PLAIN_FRAME_LEN: usize = 1514;
/// Smallest receive chain a driver may post without `MRG_RXBUF` or guest offloads
/// (virtio 1.2, 5.1.6.3.1: header plus 1514 bytes).
pub const MIN_RX_CHAIN_LEN: usize = VNET_HDR_LEN + MAX_PLAIN_FRAME_LEN;

/// A parsed virtio-net header (little endian on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`.
    pub gso_type: u8,
    /// Length of the headers for GSO.
    pub hdr_len: u16,
    /// GSO segment size.
    pub gso_size: u16,
    /// Checksum start for `NEEDS_CSUM`.
    pub csum_start: u16,
    /// Checksum offset for `NEEDS_CSUM`.
    pub csum_offset: u16,
    /// Number of buffers a received packet spans (RX only).
    pub num_buffers: u16,
}

impl VirtioNetHdr {
    /// The header the guest receives: no offload information, one buffer.
    pub fn for_rx() -> Self {
        VirtioNetHdr {
            num_buffers: 1,
            ..Default::default()
        }
    }

    /// Parses the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, HdrError> {
        let b: &[u8; VNET_HDR_LEN] = bytes
            .get(..VNET_HDR_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(HdrError::NoHeader(bytes.len()))?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
            num_buffers: le(10),
        })
    }

    /// Serializes the header.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }

    /// Checks a header written by the guest on TX when no offload was negotiated
    /// (virtio 1.2, 5.1.6.2.1: flags zero, `GSO_NONE`). `num_buffers` is ignored.
    pub fn check_tx(&self) -> Result<(), HdrError> {
        if self.flags != 0 {
            return Err(HdrError::Flags(self.flags));
        }
        if u32::from(self.gso_type) != VIRTIO_NET_HDR_GSO_NONE {
            return Err(HdrError::Gso(self.gso_type));
        }
        Ok(())
    }

    /// Checks a header produced by the TAP on RX. `DATA_VALID` is harmless (it is not
    /// forwarded); `NEEDS_CSUM` or GSO would need offloads the guest did not negotiate.
    pub fn check_from_tap(&self) -> Result<(), HdrError> {
        let unsupported = u32::from(self.flags) & !VIRTIO_NET_HDR_F_DATA_VALID;
        if unsupported != 0 {
            return Err(HdrError::Flags(self.flags));
        }
        if u32::from(self.gso_type) != VIRTIO_NET_HDR_GSO_NONE {
            return Err(HdrError::Gso(self.gso_type));
        }
        Ok(())
    }
}

/// Checks the length of an Ethernet frame (without virtio-net header).
pub fn check_frame_len(len: usize) -> Result<(), HdrError> {
    if len < ETH_HLEN {
        Err(HdrError::Runt(len))
    } else if len > MAX_FRAME_LEN {
        Err(HdrError::TooLong(len))
    } else {
        Ok(())
    }
}

/// Splits `header || frame` as found in a TX chain or read from the TAP, validating both
/// with `check` for the header and [`check_frame_len`] for the frame.
pub fn split_packet(
    packet: &[u8],
    check: impl Fn(&VirtioNetHdr) -> Result<(), HdrError>,
) -> Result<&[u8], HdrError> {
    let hdr = VirtioNetHdr::parse(packet)?;
    check(&hdr)?;
    let frame = &packet[VNET_HDR_LEN..];
    check_frame_len(frame.len())?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_net::VIRTIO_NET_HDR_F_NEEDS_CSUM;

    #[allow(clippy::cast_possible_truncation)] // bit 0
    const F_NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
    #[allow(clippy::cast_possible_truncation)] // bit 1
    const F_DATA_VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;

    #[test]
    fn round_trip_is_little_endian() {
        let h = VirtioNetHdr {
            flags: 1,
            gso_type: 3,
            hdr_len: 0x0102,
            gso_size: 0x0304,
            csum_start: 0x0506,
            csum_offset: 0x0708,
            num_buffers: 0x090a,
        };
        let b = h.to_bytes();
        assert_eq!(b, [1, 3, 2, 1, 4, 3, 6, 5, 8, 7, 0x0a, 9]);
        assert_eq!(VirtioNetHdr::parse(&b), Ok(h));
    }

    #[test]
    fn rx_header_has_one_buffer_and_nothing_else() {
        assert_eq!(
            VirtioNetHdr::for_rx().to_bytes(),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        );
    }

    #[test]
    fn parse_needs_twelve_bytes() {
        assert_eq!(VirtioNetHdr::parse(&[0u8; 11]), Err(HdrError::NoHeader(11)));
        assert!(VirtioNetHdr::parse(&[0u8; 12]).is_ok());
    }

    #[test]
    fn tx_refuses_offload_requests() {
        let mut h = VirtioNetHdr::default();
        assert_eq!(h.check_tx(), Ok(()));
        h.num_buffers = 7; // ignored on TX
        assert_eq!(h.check_tx(), Ok(()));
        h.flags = F_NEEDS_CSUM;
        assert_eq!(h.check_tx(), Err(HdrError::Flags(1)));
        h.flags = 0;
        h.gso_type = 1; // TCPV4
        assert_eq!(h.check_tx(), Err(HdrError::Gso(1)));
    }

    #[test]
    fn tap_header_data_valid_is_accepted_needs_csum_is_not() {
        let mut h = VirtioNetHdr {
            flags: F_DATA_VALID,
            ..Default::default()
        };
        assert_eq!(h.check_from_tap(), Ok(()));
        h.flags |= F_NEEDS_CSUM;
        assert_eq!(h.check_from_tap(), Err(HdrError::Flags(3)));
        h.flags = 0;
        h.gso_type = 4; // TCPV6
        assert_eq!(h.check_from_tap(), Err(HdrError::Gso(4)));
    }

    #[test]
    fn frame_length_bounds() {
        assert_eq!(check_frame_len(13), Err(HdrError::Runt(13)));
        assert_eq!(check_frame_len(14), Ok(()));
        assert_eq!(check_frame_len(MAX_FRAME_LEN), Ok(()));
        assert_eq!(
            check_frame_len(MAX_FRAME_LEN + 1),
            Err(HdrError::TooLong(MAX_FRAME_LEN + 1))
        );
    }

    #[test]
    fn split_packet_strips_header() {
        let mut p = vec![0u8; VNET_HDR_LEN];
        p.extend_from_slice(&[0xaa; 60]);
        assert_eq!(
            split_packet(&p, VirtioNetHdr::check_tx),
            Ok(&[0xaa; 60][..])
        );
        p[1] = 1;
        assert_eq!(
            split_packet(&p, VirtioNetHdr::check_tx),
            Err(HdrError::Gso(1))
        );
        assert_eq!(
            split_packet(&[0u8; 20], VirtioNetHdr::check_tx),
            Err(HdrError::Runt(8))
        );
    }
}
