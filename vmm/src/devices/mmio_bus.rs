//! Dispatch of MMIO exits to the device whose window contains the address.

/// A device reached through guest-physical MMIO. `offset` is relative to the device's base.
pub trait MmioDevice: Send {
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]);
    fn mmio_write(&mut self, offset: u64, data: &[u8]);
}

struct Window {
    base: u64,
    len: u64,
    device: usize,
}

/// Non-overlapping MMIO windows, each mapped to an index into the caller's device list.
#[derive(Default)]
pub struct MmioBus {
    windows: Vec<Window>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("MMIO window {base:#x}+{len:#x} overlaps an existing device")]
pub struct OverlapError {
    pub base: u64,
    pub len: u64,
}

impl MmioBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[base, base+len)` to device `device`.
    pub fn insert(&mut self, base: u64, len: u64, device: usize) -> Result<(), OverlapError> {
        let end = base.checked_add(len).ok_or(OverlapError { base, len })?;
        if len == 0
            || self
                .windows
                .iter()
                .any(|w| base < w.base + w.len && w.base < end)
        {
            return Err(OverlapError { base, len });
        }
        self.windows.push(Window { base, len, device });
        Ok(())
    }

    /// The device and offset for an access of `size` bytes at `addr`, if it lies entirely in
    /// one window.
    pub fn resolve(&self, addr: u64, size: usize) -> Option<(usize, u64)> {
        self.windows.iter().find_map(|w| {
            let offset = addr.checked_sub(w.base)?;
            (offset.checked_add(size as u64)? <= w.len).then_some((w.device, offset))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_resolve_to_their_window() {
        let mut bus = MmioBus::new();
        bus.insert(0xd000_0000, 0x1000, 0).expect("first");
        bus.insert(0xd000_1000, 0x1000, 1).expect("second");
        assert_eq!(bus.resolve(0xd000_0070, 4), Some((0, 0x70)));
        assert_eq!(bus.resolve(0xd000_1000, 4), Some((1, 0)));
        assert_eq!(bus.resolve(0xd000_0ffe, 4), None, "straddles two windows");
        assert_eq!(bus.resolve(0xcfff_fffc, 4), None);
    }

    #[test]
    fn overlaps_are_refused() {
        let mut bus = MmioBus::new();
        bus.insert(0x1000, 0x1000, 0).expect("first");
        assert!(bus.insert(0x1800, 0x1000, 1).is_err());
        assert!(bus.insert(0x0800, 0x1000, 1).is_err());
        assert!(bus.insert(0x2000, 0, 1).is_err());
        assert!(bus.insert(0x2000, 0x1000, 1).is_ok());
    }
}
