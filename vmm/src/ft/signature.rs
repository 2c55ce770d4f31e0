//! Landmark signatures: what identifies an exit (kind, port/address, size, data written), and
//! a running hash over all of them so that the backup checks every landmark, not only those
//! that carry a log entry.

use super::record::{ExitKind, ExitSignature};

/// FNV-1a, 64-bit: tiny, fast and good enough to notice a different exit (not a MAC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunningHash(pub u64);

impl Default for RunningHash {
    fn default() -> Self {
        RunningHash(0xcbf2_9ce4_8422_2325)
    }
}

impl RunningHash {
    pub fn add(&mut self, sig: &ExitSignature) {
        let mut bytes = [0u8; 18];
        bytes[0] = sig.kind as u8;
        bytes[1..9].copy_from_slice(&sig.addr.to_le_bytes());
        bytes[9] = sig.size;
        bytes[10..18].copy_from_slice(&sig.data.to_le_bytes());
        for b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The signature of a write exit: `data` holds up to 8 bytes, little-endian.
pub fn write_sig(kind: ExitKind, addr: u64, data: &[u8]) -> ExitSignature {
    let mut v = [0u8; 8];
    let n = data.len().min(8);
    v[..n].copy_from_slice(&data[..n]);
    ExitSignature {
        kind,
        addr,
        size: access_size(data.len()),
        data: u64::from_le_bytes(v),
    }
}

/// The width of a port or MMIO access: 1 to 8 bytes (KVM's exit data); a wider one is
/// recorded as 255, which no replay matches.
fn access_size(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

pub fn read_sig(kind: ExitKind, addr: u64, size: usize) -> ExitSignature {
    ExitSignature {
        kind,
        addr,
        size: access_size(size),
        data: 0,
    }
}

pub fn hlt_sig() -> ExitSignature {
    ExitSignature {
        kind: ExitKind::Hlt,
        addr: 0,
        size: 0,
        data: 0,
    }
}

pub fn describe(sig: &ExitSignature) -> String {
    match sig.kind {
        ExitKind::Hlt => "hlt".to_string(),
        ExitKind::PioIn | ExitKind::MmioRead => {
            format!("{:?} {:#x} size {}", sig.kind, sig.addr, sig.size)
        }
        ExitKind::PioOut | ExitKind::MmioWrite => {
            format!(
                "{:?} {:#x} size {} data {:#x}",
                sig.kind, sig.addr, sig.size, sig.data
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_exits_hash_differently() {
        let a = write_sig(ExitKind::PioOut, 0x3f8, b"a");
        let b = write_sig(ExitKind::PioOut, 0x3f8, b"b");
        let (mut h1, mut h2) = (RunningHash::default(), RunningHash::default());
        h1.add(&a);
        h2.add(&b);
        assert_ne!(h1, h2);
        let mut h3 = RunningHash::default();
        h3.add(&a);
        assert_eq!(h1, h3, "same sequence, same hash");
        assert_eq!(describe(&a), "PioOut 0x3f8 size 1 data 0x61");
    }
}
