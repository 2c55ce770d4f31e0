//! The VMM's own access to split virtqueues (virtio 1.2 section 2.7), for fault-tolerant mode:
//! writing used elements for completions a backend handed over, and digesting the readable
//! part of a descriptor chain (an output) so that the backup can compare it with the primary's.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::QueueConfig;

const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;
const VIRTQ_DESC_F_INDIRECT: u16 = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("queue is not set up")]
    NotReady,
    #[error("descriptor {0} is outside the queue")]
    BadIndex(u16),
    #[error("guest memory access at {0:#x} failed")]
    Memory(u64),
    #[error("descriptor chain longer than the queue (a loop?)")]
    Loop,
}

/// A guest-memory write the VMM made, to be logged for the backup: the same shape as the
/// writes a backend hands over on the FT control channel.
pub use ft_control::MemWrite as Written;

fn write(
    mem: &GuestMemoryMmap,
    gpa: u64,
    data: &[u8],
    log: &mut Vec<Written>,
) -> Result<(), RingError> {
    mem.write_slice(data, GuestAddress(gpa))
        .map_err(|_| RingError::Memory(gpa))?;
    log.push(Written {
        gpa,
        data: data.to_vec(),
    });
    Ok(())
}

/// Appends used element (head, len) to the used ring and publishes it by bumping the used
/// index (element first, then index: the order the spec requires, 2.7.8.2).
pub fn push_used(
    mem: &GuestMemoryMmap,
    q: &QueueConfig,
    head: u16,
    len: u32,
    log: &mut Vec<Written>,
) -> Result<(), RingError> {
    if !q.ready || q.size == 0 {
        return Err(RingError::NotReady);
    }
    let idx: u16 = mem
        .read_obj(GuestAddress(q.device + 2))
        .map_err(|_| RingError::Memory(q.device + 2))?;
    let slot = q.device + 4 + 8 * u64::from(idx % q.size);
    let mut elem = [0u8; 8];
    elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
    elem[4..].copy_from_slice(&len.to_le_bytes());
    write(mem, slot, &elem, log)?;
    write(mem, q.device + 2, &idx.wrapping_add(1).to_le_bytes(), log)
}

struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn read_desc(mem: &GuestMemoryMmap, table: u64, i: u16) -> Result<Desc, RingError> {
    let mut b = [0u8; 16];
    let at = table + 16 * u64::from(i);
    mem.read_slice(&mut b, GuestAddress(at))
        .map_err(|_| RingError::Memory(at))?;
    Ok(Desc {
        addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        flags: u16::from_le_bytes([b[12], b[13]]),
        next: u16::from_le_bytes([b[14], b[15]]),
    })
}

/// The readable (device-readable) bytes of chain `head`, in chain order, following one level
/// of indirect table (2.7.5.3).
pub fn readable_bytes(
    mem: &GuestMemoryMmap,
    q: &QueueConfig,
    head: u16,
) -> Result<Vec<u8>, RingError> {
    if !q.ready || q.size == 0 {
        return Err(RingError::NotReady);
    }
    let mut out = Vec::new();
    let (mut table, mut size, mut i) = (q.desc, q.size, head);
    let mut steps = 0usize;
    loop {
        if i >= size {
            return Err(RingError::BadIndex(i));
        }
        let d = read_desc(mem, table, i)?;
        steps += 1;
        if steps > 2 * usize::from(u16::MAX) {
            return Err(RingError::Loop);
        }
        if d.flags & VIRTQ_DESC_F_INDIRECT != 0 {
            table = d.addr;
            size = (d.len / 16).min(u32::from(u16::MAX)) as u16;
            i = 0;
            continue;
        }
        if d.flags & VIRTQ_DESC_F_WRITE == 0 {
            let start = out.len();
            out.resize(start + d.len as usize, 0);
            mem.read_slice(&mut out[start..], GuestAddress(d.addr))
                .map_err(|_| RingError::Memory(d.addr))?;
        }
        if d.flags & VIRTQ_DESC_F_NEXT == 0 {
            return Ok(out);
        }
        i = d.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (GuestMemoryMmap, QueueConfig) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("memory");
        let q = QueueConfig {
            size: 8,
            ready: true,
            desc: 0x1000,
            driver: 0x2000,
            device: 0x3000,
        };
        (mem, q)
    }

    fn desc(mem: &GuestMemoryMmap, table: u64, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(table + 16 * i);
        mem.write_obj(addr, at).expect("addr");
        mem.write_obj(len, GuestAddress(at.0 + 8)).expect("len");
        mem.write_obj(flags, GuestAddress(at.0 + 12))
            .expect("flags");
        mem.write_obj(next, GuestAddress(at.0 + 14)).expect("next");
    }

    #[test]
    fn used_elements_wrap_and_bump_the_index() {
        let (mem, q) = setup();
        mem.write_obj(7u16, GuestAddress(q.device + 2))
            .expect("idx");
        let mut log = Vec::new();
        push_used(&mem, &q, 3, 100, &mut log).expect("push");
        push_used(&mem, &q, 4, 0, &mut log).expect("push");
        assert_eq!(
            mem.read_obj::<u16>(GuestAddress(q.device + 2))
                .expect("idx"),
            9
        );
        // idx 7 -> slot 7; idx 8 -> slot 0.
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(q.device + 4 + 8 * 7))
                .expect("id"),
            3
        );
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(q.device + 4 + 8 * 7 + 4))
                .expect("len"),
            100
        );
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(q.device + 4)).expect("id"),
            4
        );
        assert_eq!(log.len(), 4, "element and index, twice");
        assert_eq!(
            log[1],
            Written {
                gpa: q.device + 2,
                data: vec![8, 0]
            }
        );
    }

    #[test]
    fn readable_bytes_skip_writable_buffers_and_follow_indirect_tables() {
        let (mem, q) = setup();
        mem.write_slice(b"hdr", GuestAddress(0x8000)).expect("w");
        mem.write_slice(b"data", GuestAddress(0x9000)).expect("w");
        desc(&mem, q.desc, 0, 0x8000, 3, VIRTQ_DESC_F_NEXT, 5);
        desc(&mem, q.desc, 5, 0x9000, 4, VIRTQ_DESC_F_NEXT, 2);
        desc(&mem, q.desc, 2, 0xa000, 16, VIRTQ_DESC_F_WRITE, 0);
        assert_eq!(readable_bytes(&mem, &q, 0).expect("chain"), b"hdrdata");
        desc(&mem, 0x6000, 0, 0x9000, 4, VIRTQ_DESC_F_NEXT, 1);
        desc(&mem, 0x6000, 1, 0x8000, 3, 0, 0);
        desc(&mem, q.desc, 1, 0x6000, 32, VIRTQ_DESC_F_INDIRECT, 0);
        assert_eq!(readable_bytes(&mem, &q, 1).expect("indirect"), b"datahdr");
    }

    #[test]
    fn bad_chains_are_errors_not_panics() {
        let (mem, q) = setup();
        assert_eq!(readable_bytes(&mem, &q, 9), Err(RingError::BadIndex(9)));
        desc(&mem, q.desc, 0, 0x8000, 1, VIRTQ_DESC_F_NEXT, 0); // loops on itself
        assert_eq!(readable_bytes(&mem, &q, 0), Err(RingError::Loop));
        desc(&mem, q.desc, 3, 0xfff_0000, 8, 0, 0);
        assert_eq!(
            readable_bytes(&mem, &q, 3),
            Err(RingError::Memory(0xfff_0000))
        );
        let off = QueueConfig::default();
        assert_eq!(
            push_used(&mem, &off, 0, 0, &mut Vec::new()),
            Err(RingError::NotReady)
        );
    }
}
