//! Validation of descriptor chains and copying between them and local buffers.
//!
//! Every chain the driver offers is untrusted. [`validate_chain`] walks it once and checks,
//! for every descriptor, the direction (all device-readable on TX, all device-writable on RX)
//! and that `[addr, addr + len)` lies completely inside guest memory; it also detects chains
//! that end abnormally (virtio-queue's iterator silently stops at a bad `next` index, a loop,
//! an unreadable descriptor or an oversized chain: the last descriptor it yields then still
//! has `NEXT` set). Only a validated chain is read ([`gather`]) or written ([`scatter`]);
//! the guest memory accessors check bounds again, so a guest that changes the descriptors
//! underneath can at worst get an error, never an access outside its memory.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use crate::error::ChainError;

/// Which way data flows through a chain, seen from the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The device reads (TX queue).
    DeviceReadable,
    /// The device writes (RX queue).
    DeviceWritable,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::DeviceReadable => "device-readable",
            Direction::DeviceWritable => "device-writable",
        }
    }
}

/// One validated buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: usize,
}

/// The buffers of a validated chain, in chain order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Segments {
    /// The buffers; zero-length descriptors are left out.
    pub segments: Vec<Segment>,
    /// Sum of the lengths.
    pub total: usize,
}

/// Validates the descriptors of one chain (see the module documentation).
pub fn validate_chain<M, I>(mem: &M, descs: I, dir: Direction) -> Result<Segments, ChainError>
where
    M: GuestMemory + ?Sized,
    I: IntoIterator<Item = Descriptor>,
{
    let want_write = dir == Direction::DeviceWritable;
    let perm = if want_write {
        Permissions::Write
    } else {
        Permissions::Read
    };
    let mut out = Segments::default();
    let mut last: Option<Descriptor> = None;
    for (index, desc) in descs.into_iter().enumerate() {
        if desc.is_write_only() != want_write {
            let found = if desc.is_write_only() {
                Direction::DeviceWritable
            } else {
                Direction::DeviceReadable
            };
            return Err(ChainError::WrongDirection {
                index,
                found: found.name(),
                expected: dir.name(),
            });
        }
        let len = desc.len() as usize;
        if len > 0 {
            // A zero-length range is "in memory" anywhere; anything else must be fully backed.
            if !GuestMemory::check_range(mem, desc.addr(), len, perm) {
                return Err(ChainError::OutOfMemory {
                    index,
                    addr: desc.addr().0,
                    len: desc.len(),
                });
            }
            out.total = out.total.checked_add(len).ok_or(ChainError::Broken)?;
            out.segments.push(Segment {
                addr: desc.addr(),
                len,
            });
        }
        last = Some(desc);
    }
    match last {
        None => Err(ChainError::Empty),
        Some(d) if d.has_next() => Err(ChainError::Broken),
        Some(_) => Ok(out),
    }
}

/// Reads the whole content of validated device-readable segments.
pub fn gather<M: GuestMemory + ?Sized>(mem: &M, segs: &Segments) -> Result<Vec<u8>, ChainError> {
    let mut buf = vec![0u8; segs.total];
    let mut off = 0;
    for s in &segs.segments {
        let end = off + s.len;
        mem.read_slice(&mut buf[off..end], s.addr)?;
        off = end;
    }
    Ok(buf)
}

/// Writes `parts` back to back into validated device-writable segments and returns the number
/// of bytes written. Fails with [`ChainError::TooShort`] (before writing) if they do not fit.
pub fn scatter<M: GuestMemory + ?Sized>(
    mem: &M,
    segs: &Segments,
    parts: &[&[u8]],
) -> Result<usize, ChainError> {
    let need: usize = parts.iter().map(|p| p.len()).sum();
    if need > segs.total {
        return Err(ChainError::TooShort {
            have: segs.total,
            need,
        });
    }
    let mut seg_iter = segs.segments.iter();
    let mut cur: Option<(GuestAddress, usize)> = None;
    for part in parts {
        let mut data: &[u8] = part;
        while !data.is_empty() {
            let (addr, room) = match cur {
                Some((a, r)) if r > 0 => (a, r),
                _ => {
                    let s = seg_iter.next().ok_or(ChainError::TooShort {
                        have: segs.total,
                        need,
                    })?;
                    (s.addr, s.len)
                }
            };
            let n = room.min(data.len());
            mem.write_slice(&data[..n], addr)?;
            let next = addr.0.checked_add(n as u64).ok_or(ChainError::Broken)?;
            cur = Some((GuestAddress(next), room - n));
            data = &data[n..];
        }
    }
    Ok(need)
}

/// Where `data` lands when written back to back into validated device-writable segments, as
/// [`scatter`] would write it: one `(address, piece)` per segment touched, in chain order.
/// The FT primary sends these to the VMM instead of writing them. Fails with
/// [`ChainError::TooShort`] if `data` does not fit.
pub fn plan_writes<'d>(
    segs: &Segments,
    data: &'d [u8],
) -> Result<Vec<(GuestAddress, &'d [u8])>, ChainError> {
    if data.len() > segs.total {
        return Err(ChainError::TooShort {
            have: segs.total,
            need: data.len(),
        });
    }
    let mut out = Vec::new();
    let mut rest = data;
    for s in &segs.segments {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(s.len.min(rest.len()));
        out.push((s.addr, piece));
        rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use vm_memory::GuestMemoryMmap;

    #[allow(clippy::cast_possible_truncation)] // flag bit 2
    const W: u16 = VRING_DESC_F_WRITE as u16;
    #[allow(clippy::cast_possible_truncation)] // flag bit 1
    const N: u16 = VRING_DESC_F_NEXT as u16;

    fn mem() -> GuestMemoryMmap<()> {
        // Two regions with a hole in between: [0, 64K) and [128K, 192K).
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1_0000),
            (GuestAddress(0x2_0000), 0x1_0000),
        ])
        .expect("guest memory")
    }

    fn d(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }

    #[test]
    fn readable_chain_in_memory_is_accepted() {
        let m = mem();
        let s = validate_chain(
            &m,
            [d(0x1000, 12, N), d(0x2000, 0, N), d(0x2_0000, 100, 0)],
            Direction::DeviceReadable,
        )
        .expect("valid");
        assert_eq!(s.total, 112);
        assert_eq!(s.segments.len(), 2, "zero-length descriptor is skipped");
    }

    #[test]
    fn wrong_direction_is_refused() {
        let m = mem();
        let e = validate_chain(
            &m,
            [d(0x1000, 12, N), d(0x2000, 100, W)],
            Direction::DeviceReadable,
        )
        .unwrap_err();
        assert!(
            matches!(e, ChainError::WrongDirection { index: 1, .. }),
            "{e}"
        );
        let e = validate_chain(&m, [d(0x1000, 12, 0)], Direction::DeviceWritable).unwrap_err();
        assert!(
            matches!(e, ChainError::WrongDirection { index: 0, .. }),
            "{e}"
        );
    }

    #[test]
    fn out_of_memory_is_refused() {
        let m = mem();
        // Completely outside.
        let e = validate_chain(&m, [d(0x10_0000, 64, W)], Direction::DeviceWritable).unwrap_err();
        assert!(matches!(e, ChainError::OutOfMemory { index: 0, .. }), "{e}");
        // Straddling the end of the first region into the hole.
        let e = validate_chain(&m, [d(0xfff0, 0x20, W)], Direction::DeviceWritable).unwrap_err();
        assert!(matches!(e, ChainError::OutOfMemory { .. }), "{e}");
        // Address overflow.
        let e =
            validate_chain(&m, [d(u64::MAX - 4, 16, 0)], Direction::DeviceReadable).unwrap_err();
        assert!(matches!(e, ChainError::OutOfMemory { .. }), "{e}");
    }

    #[test]
    fn empty_and_broken_chains_are_refused() {
        let m = mem();
        let e = validate_chain(&m, [], Direction::DeviceReadable).unwrap_err();
        assert!(matches!(e, ChainError::Empty), "{e}");
        // The iterator stopped while the last descriptor still says NEXT.
        let e = validate_chain(&m, [d(0x1000, 12, N)], Direction::DeviceReadable).unwrap_err();
        assert!(matches!(e, ChainError::Broken), "{e}");
    }

    #[test]
    fn gather_and_scatter_cross_segment_boundaries() {
        let m = mem();
        let segs = validate_chain(
            &m,
            [
                d(0x1000, 5, W | N),
                d(0x2_0000, 3, W | N),
                d(0x3000, 100, W),
            ],
            Direction::DeviceWritable,
        )
        .expect("valid");
        let written = scatter(&m, &segs, &[b"hello", b"world!", b""]).expect("fits");
        assert_eq!(written, 11);
        assert_eq!(&gather(&m, &segs).expect("read")[..11], b"helloworld!");
        let mut b = [0u8; 3];
        m.read_slice(&mut b, GuestAddress(0x2_0000)).expect("read");
        assert_eq!(&b, b"wor");
    }

    #[test]
    fn scatter_refuses_what_does_not_fit_without_writing() {
        let m = mem();
        let segs = validate_chain(&m, [d(0x1000, 4, W)], Direction::DeviceWritable).expect("ok");
        let e = scatter(&m, &segs, &[b"12345"]).unwrap_err();
        assert!(
            matches!(e, ChainError::TooShort { have: 4, need: 5 }),
            "{e}"
        );
        let mut b = [0xffu8; 4];
        m.read_slice(&mut b, GuestAddress(0x1000)).expect("read");
        assert_eq!(b, [0; 4]);
    }
    #[test]
    fn plan_writes_matches_what_scatter_writes() {
        let m = mem();
        let segs = validate_chain(
            &m,
            [
                d(0x1000, 5, W | N),
                d(0x2_0000, 3, W | N),
                d(0x3000, 100, W),
            ],
            Direction::DeviceWritable,
        )
        .expect("valid");
        let data = b"helloworld!";
        let plan = plan_writes(&segs, data).expect("fits");
        assert_eq!(
            plan,
            vec![
                (GuestAddress(0x1000), &b"hello"[..]),
                (GuestAddress(0x2_0000), &b"wor"[..]),
                (GuestAddress(0x3000), &b"ld!"[..]),
            ]
        );
        // Exactly fitting data touches every segment and nothing more.
        let exact = [7u8; 108];
        let plan = plan_writes(&segs, &exact).expect("fits");
        assert_eq!(plan.iter().map(|(_, p)| p.len()).sum::<usize>(), 108);
        assert_eq!(plan.len(), 3);
        let e = plan_writes(&segs, &[0u8; 109]).unwrap_err();
        assert!(
            matches!(
                e,
                ChainError::TooShort {
                    have: 108,
                    need: 109
                }
            ),
            "{e}"
        );
        // scatter writes the same bytes at the same places.
        scatter(&m, &segs, &[data]).expect("scatter");
        for (addr, piece) in plan_writes(&segs, data).expect("fits") {
            let mut b = vec![0u8; piece.len()];
            m.read_slice(&mut b, addr).expect("read");
            assert_eq!(b, piece);
        }
    }
}
