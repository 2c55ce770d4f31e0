//! Device features and configuration space (virtio 1.2, section 5.2.4).

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use crate::nbd::ExportInfo;

/// Sector size of virtio-blk (capacity and request offsets are in these units).
pub const SECTOR_SIZE: u64 = 512;
/// `SECTOR_SIZE` where the config space wants a u32.
pub const SECTOR_BYTES: u32 = 512;
/// Size of one virtqueue.
pub const QUEUE_SIZE: usize = 256;
/// Largest request (sum of its data buffers) the device accepts.
pub const MAX_REQUEST_BYTES: u32 = 32 * 1024 * 1024;
/// Advertised `seg_max` (data segments per request) and `size_max` (bytes per segment).
pub const SEG_MAX: u32 = 32;
pub const SIZE_MAX: u32 = 1024 * 1024;
/// Length of the configuration space we expose (up to and including `unused1`).
pub const CONFIG_LEN: usize = 60;

/// Static description of the device, derived from the NBD export and the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Capacity in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Logical block size reported to the guest (>= 512, the export's minimum block size).
    pub blk_size: u32,
    pub read_only: bool,
    pub flush: bool,
    pub discard: bool,
    /// Serial number returned by `VIRTIO_BLK_T_GET_ID` (at most 20 bytes).
    pub serial: Vec<u8>,
}

impl DeviceConfig {
    /// Builds the device description from what the NBD handshake reported.
    pub fn from_export(info: &ExportInfo, force_read_only: bool, serial: &str) -> Self {
        let mut serial = serial.as_bytes().to_vec();
        serial.truncate(VIRTIO_BLK_ID_BYTES as usize);
        DeviceConfig {
            capacity_sectors: info.size / SECTOR_SIZE,
            blk_size: info.min_block.max(SECTOR_BYTES),
            read_only: force_read_only || info.read_only(),
            flush: info.can_flush(),
            discard: info.can_trim() && !(force_read_only || info.read_only()),
            serial,
        }
    }

    /// Capacity in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_sectors * SECTOR_SIZE
    }

    /// Virtio feature bits offered to the driver.
    pub fn features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1)
            | (1u64 << VIRTIO_RING_F_EVENT_IDX)
            | (1u64 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1u64 << VIRTIO_BLK_F_SEG_MAX)
            | (1u64 << VIRTIO_BLK_F_SIZE_MAX)
            | (1u64 << VIRTIO_BLK_F_BLK_SIZE)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if self.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        if self.flush {
            f |= 1 << VIRTIO_BLK_F_FLUSH;
        }
        if self.discard {
            f |= 1 << VIRTIO_BLK_F_DISCARD;
        }
        f
    }

    /// vhost-user protocol features offered to the frontend.
    pub fn protocol_features() -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK
    }

    /// Maximum sectors of one discard segment.
    pub fn max_discard_sectors(&self) -> u32 {
        // NBD_CMD_TRIM takes a 32-bit byte length.
        (u32::MAX / SECTOR_BYTES) & !((self.blk_size / SECTOR_BYTES) - 1)
    }

    /// The `struct virtio_blk_config` bytes (little-endian).
    pub fn config_space(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        let put32 = |c: &mut [u8; CONFIG_LEN], off: usize, v: u32| {
            c[off..off + 4].copy_from_slice(&v.to_le_bytes())
        };
        c[0..8].copy_from_slice(&self.capacity_sectors.to_le_bytes()); // capacity
        put32(&mut c, 8, SIZE_MAX); // size_max
        put32(&mut c, 12, SEG_MAX); // seg_max
                                    // geometry (16..20) left zero
        put32(&mut c, 20, self.blk_size); // blk_size
                                          // topology (24..32): physical_block_exp, alignment_offset, min_io_size, opt_io_size
                                          // writeback (32), unused0 (33) left zero
        c[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
        if self.discard {
            put32(&mut c, 36, self.max_discard_sectors()); // max_discard_sectors
            put32(&mut c, 40, 1); // max_discard_seg
            put32(&mut c, 44, self.blk_size / SECTOR_BYTES); // discard_sector_alignment
        }
        // write zeroes (48..60) not offered
        c
    }

    /// `GET_CONFIG`: `size` bytes from `offset`, zero past the end of the structure.
    pub fn read_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let space = self.config_space();
        let mut out = vec![0u8; size as usize];
        let start = offset as usize;
        if start < CONFIG_LEN {
            let n = (CONFIG_LEN - start).min(out.len());
            out[..n].copy_from_slice(&space[start..start + n]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::proto::*;

    fn info(flags: u16) -> ExportInfo {
        ExportInfo {
            size: 1 << 20,
            flags: NBD_FLAG_HAS_FLAGS | flags,
            min_block: 1,
            preferred_block: 4096,
            max_payload: 1 << 25,
        }
    }

    #[test]
    fn features_follow_export() {
        let c = DeviceConfig::from_export(&info(NBD_FLAG_SEND_FLUSH), false, "x");
        let f = c.features();
        assert_ne!(f & (1 << VIRTIO_BLK_F_FLUSH), 0);
        assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
        assert_eq!(f & (1 << VIRTIO_BLK_F_DISCARD), 0);
        assert_ne!(f & (1 << VIRTIO_F_VERSION_1), 0);

        let c =
            DeviceConfig::from_export(&info(NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_TRIM), false, "");
        assert_ne!(c.features() & (1 << VIRTIO_BLK_F_RO), 0);
        assert_eq!(c.features() & (1 << VIRTIO_BLK_F_DISCARD), 0);

        let c = DeviceConfig::from_export(&info(NBD_FLAG_SEND_TRIM), true, "");
        assert_ne!(c.features() & (1 << VIRTIO_BLK_F_RO), 0);
        let c = DeviceConfig::from_export(&info(NBD_FLAG_SEND_TRIM), false, "");
        assert_ne!(c.features() & (1 << VIRTIO_BLK_F_DISCARD), 0);
    }

    #[test]
    fn config_layout() {
        let c = DeviceConfig::from_export(&info(0), false, "serial-number-longer-than-twenty");
        assert_eq!(c.serial.len(), 20);
        let s = c.config_space();
        assert_eq!(u64::from_le_bytes(s[0..8].try_into().unwrap()), 2048);
        assert_eq!(u32::from_le_bytes(s[12..16].try_into().unwrap()), SEG_MAX);
        assert_eq!(u32::from_le_bytes(s[20..24].try_into().unwrap()), 512);
        assert_eq!(c.read_config(0, 8), s[0..8].to_vec());
        assert_eq!(c.read_config(56, 8), vec![0; 8]);
        assert_eq!(c.read_config(200, 4), vec![0; 4]);
    }
}
