//! The VMM's own access to split virtqueues (virtio 1.2 section 2.7), for fault-tolerant mode:
//! writing used elements for completions a backend handed over, and digesting the readable
//! part of a descriptor chain (an output) so that the backup can compare it with the primary's.
//!
//! The digest is `ft_control::digest::chain_digest`, the function the backends announce
//! their outputs with. This module only finds the chain's descriptors: virtio-queue walks
//! chains only as it pops them off the available ring (`DescriptorChain::new` is private),
//! and the backup must look at the chain of a given head without taking it.

use ft_control::digest::{chain_digest, DigestError};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::QueueConfig;

// Flag bits 1 and 4 (virtio 1.2 section 2.7.5): they fit the u16 `flags`.
#[allow(clippy::cast_possible_truncation)]
const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
#[allow(clippy::cast_possible_truncation)]
const F_INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

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
    #[error("{0}")]
    Digest(#[from] DigestError),
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

fn read_desc(mem: &GuestMemoryMmap, table: u64, i: u16) -> Result<Descriptor, RingError> {
    let at = table + 16 * u64::from(i);
    let raw: RawDescriptor = mem
        .read_obj(GuestAddress(at))
        .map_err(|_| RingError::Memory(at))?;
    Ok(Descriptor::from(raw))
}

/// The descriptors of chain `head`, in chain order, following one level of indirect table
/// (2.7.5.3); an indirect descriptor itself is replaced by its table's entries. Bounded: at
/// most two queues' worth of steps, so a looping chain is an error.
pub fn chain(
    mem: &GuestMemoryMmap,
    q: &QueueConfig,
    head: u16,
) -> Result<Vec<Descriptor>, RingError> {
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
        if d.flags() & F_INDIRECT != 0 {
            table = d.addr().0;
            size = u16::try_from(d.len() / 16).unwrap_or(u16::MAX);
            i = 0;
            continue;
        }
        out.push(d);
        if d.flags() & F_NEXT == 0 {
            return Ok(out);
        }
        i = d.next();
    }
}

/// The output digest of chain `head`: what the backend announced for it, if the backup's
/// guest produced the same output.
pub fn output_digest(
    mem: &GuestMemoryMmap,
    q: &QueueConfig,
    head: u16,
) -> Result<[u8; 32], RingError> {
    Ok(chain_digest(mem, chain(mem, q, head)?)?)
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

    fn sha(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(bytes).into()
    }

    #[allow(clippy::cast_possible_truncation)] // flag bit 2
    const F_WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;

    #[test]
    fn the_digest_skips_writable_buffers_and_follows_indirect_tables() {
        let (mem, q) = setup();
        mem.write_slice(b"hdr", GuestAddress(0x8000)).expect("w");
        mem.write_slice(b"data", GuestAddress(0x9000)).expect("w");
        desc(&mem, q.desc, 0, 0x8000, 3, F_NEXT, 5);
        desc(&mem, q.desc, 5, 0x9000, 4, F_NEXT, 2);
        desc(&mem, q.desc, 2, 0xa000, 16, F_WRITE, 0);
        assert_eq!(output_digest(&mem, &q, 0), Ok(sha(b"hdrdata")));
        desc(&mem, 0x6000, 0, 0x9000, 4, F_NEXT, 1);
        desc(&mem, 0x6000, 1, 0x8000, 3, 0, 0);
        desc(&mem, q.desc, 1, 0x6000, 32, F_INDIRECT, 0);
        assert_eq!(output_digest(&mem, &q, 1), Ok(sha(b"datahdr")));
    }

    #[test]
    fn bad_chains_are_errors_not_panics() {
        let (mem, q) = setup();
        assert_eq!(output_digest(&mem, &q, 9), Err(RingError::BadIndex(9)));
        desc(&mem, q.desc, 0, 0x8000, 1, F_NEXT, 0); // loops on itself
        assert_eq!(output_digest(&mem, &q, 0), Err(RingError::Loop));
        desc(&mem, q.desc, 3, 0xfff_0000, 8, 0, 0);
        assert_eq!(
            output_digest(&mem, &q, 3),
            Err(RingError::Digest(DigestError::OutOfMemory {
                addr: 0xfff_0000,
                len: 8
            }))
        );
        let off = QueueConfig::default();
        assert_eq!(
            push_used(&mem, &off, 0, 0, &mut Vec::new()),
            Err(RingError::NotReady)
        );
    }
}
