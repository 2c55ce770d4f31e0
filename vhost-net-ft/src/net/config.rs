//! Device identity: queues, feature bits and the virtio-net configuration space.
//!
//! Offered virtio features: `VIRTIO_F_VERSION_1`, `VIRTIO_NET_F_MAC`, `VIRTIO_NET_F_STATUS`,
//! `VIRTIO_RING_F_INDIRECT_DESC` (handled by virtio-queue, every indirect descriptor is
//! validated like a direct one) and the vhost-user `PROTOCOL_FEATURES` bit. No checksum or
//! segmentation offload, no `MRG_RXBUF`, no `EVENT_IDX`, no control queue, one queue pair.
//! Offered vhost-user protocol features: `CONFIG` (the frontend reads the MAC and link status
//! with `GET_CONFIG`) and `REPLY_ACK`.

use std::fmt;
use std::str::FromStr;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    virtio_net_config, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;

use crate::error::MacError;

/// Index of the receive queue.
/// `status` of the config space (virtio 1.2 section 5.1.4), a u16 field.
#[allow(clippy::cast_possible_truncation)] // bit 0
const LINK_UP: u16 = VIRTIO_NET_S_LINK_UP as u16;

pub const RX_QUEUE: usize = 0;
/// The queue indices as vhost-user-backend's `u16`.
pub const RX_QUEUE_U16: u16 = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
pub const TX_QUEUE_U16: u16 = 1;
/// Number of virtqueues (one RX/TX pair, no control queue).
pub const NUM_QUEUES: usize = 2;
/// Largest queue size the frontend may configure.
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Size of `struct virtio_net_config` (virtio 1.2, 5.1.4).
pub const CONFIG_SPACE_LEN: usize = std::mem::size_of::<virtio_net_config>();

/// The virtio feature bits this device offers.
pub fn device_features() -> u64 {
    (1u64 << VIRTIO_F_VERSION_1)
        | (1u64 << VIRTIO_NET_F_MAC)
        | (1u64 << VIRTIO_NET_F_STATUS)
        | (1u64 << VIRTIO_RING_F_INDIRECT_DESC)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// The vhost-user protocol features this backend offers.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK
}

/// An Ethernet unicast MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The default when `--mac` is not given (QEMU's default, locally administered).
    pub const DEFAULT: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
}

impl FromStr for MacAddr {
    type Err = MacError;

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-`); refuses multicast addresses, which a NIC
    /// cannot have.
    fn from_str(s: &str) -> Result<Self, MacError> {
        let err = || MacError(s.to_string());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut mac = [0u8; 6];
        for (b, p) in mac.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(err());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if mac[0] & 1 != 0 {
            return Err(err());
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Static configuration of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The guest's MAC address (configuration space `mac`).
    pub mac: MacAddr,
}

impl NetConfig {
    /// The configuration space: `mac`, `status = LINK_UP`, `max_virtqueue_pairs = 1`, the
    /// remaining fields (only meaningful with features we do not offer) zero.
    pub fn config_space(&self) -> [u8; CONFIG_SPACE_LEN] {
        let mut c = [0u8; CONFIG_SPACE_LEN];
        c[0..6].copy_from_slice(&self.mac.0);
        c[6..8].copy_from_slice(&LINK_UP.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c
    }

    /// A `GET_CONFIG` read. Out-of-range requests get an empty reply, which the vhost-user
    /// library turns into an error reply.
    pub fn read_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let space = self.config_space();
        let start = offset as usize;
        match start.checked_add(size as usize) {
            Some(end) if end <= space.len() => space[start..end].to_vec(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        let m: MacAddr = "52:54:00:ab:CD:ef".parse().expect("valid");
        assert_eq!(m.0, [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
        assert_eq!(m.to_string(), "52:54:00:ab:cd:ef");
        assert_eq!(
            "02-00-00-00-00-01".parse::<MacAddr>().map(|m| m.0[5]),
            Ok(1)
        );
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "52:54:00:ab:cd:g0",
            "525:4:00:ab:cd:ef",
            "01:00:5e:00:00:01", // multicast
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn config_space_layout() {
        let c = NetConfig {
            mac: MacAddr([2, 3, 4, 5, 6, 7]),
        };
        let s = c.config_space();
        assert_eq!(s.len(), 24);
        assert_eq!(&s[..6], &[2, 3, 4, 5, 6, 7]);
        assert_eq!(&s[6..8], &[1, 0], "link up");
        assert_eq!(&s[8..10], &[1, 0], "one queue pair");
        assert_eq!(c.read_config(0, 6), vec![2, 3, 4, 5, 6, 7]);
        assert_eq!(c.read_config(6, 2), vec![1, 0]);
        assert_eq!(c.read_config(0, 24).len(), 24);
        assert!(c.read_config(20, 8).is_empty());
        assert!(c.read_config(u32::MAX, 2).is_empty());
    }

    #[test]
    fn features_are_the_documented_set() {
        let f = device_features();
        assert_ne!(f & (1 << 32), 0, "VERSION_1");
        assert_ne!(f & (1 << 5), 0, "MAC");
        assert_ne!(f & (1 << 16), 0, "STATUS");
        assert_ne!(f & (1 << 30), 0, "vhost-user PROTOCOL_FEATURES");
        for (bit, name) in [
            (0, "CSUM"),
            (1, "GUEST_CSUM"),
            (15, "MRG_RXBUF"),
            (29, "EVENT_IDX"),
        ] {
            assert_eq!(f & (1 << bit), 0, "{name} must not be offered");
        }
    }
}
