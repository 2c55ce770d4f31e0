//! The digest of an output: SHA-256 over the device-readable bytes of its descriptor chain,
//! in chain order (docs/PROTOCOL.md, `OutputReady`). The primary's backend announces it with
//! each output; the backup VMM computes it over its own guest memory when it replays the
//! output's landmark and stops at the first output that differs (determinism contract,
//! point 6). Both sides call [`chain_digest`], so they cannot disagree on what is covered
//! (writable descriptors are skipped, indirect tables are resolved by the chain iterator,
//! zero-length descriptors add nothing).
//!
//! The bytes are streamed through the hash in pieces of [`PIECE`] bytes: the guest chooses
//! descriptor lengths, so nothing here allocates by them; the total is bounded by
//! [`MAX_OUTPUT_BYTES`] (more than any device accepts in one request).

use sha2::{Digest as _, Sha256};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Largest number of readable bytes an output may have (the largest virtio-blk request is
/// 32 MiB of data plus its header; a frame is 64 KiB).
pub const MAX_OUTPUT_BYTES: u64 = 64 << 20;
/// How many bytes are read from guest memory at a time.
const PIECE: usize = 4096;

/// Why the digest of a chain could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("readable descriptor [{addr:#x}, +{len}) is outside guest memory")]
    OutOfMemory { addr: u64, len: u32 },
    #[error("the chain has more than {MAX_OUTPUT_BYTES} readable bytes")]
    TooLong,
}

/// SHA-256 over the readable bytes of `descriptors`: one chain's descriptors in chain order,
/// as `virtio_queue::DescriptorChain` yields them (the backends pass a clone of the chain
/// they popped; the backup VMM the chain it finds at the output's head).
pub fn chain_digest<M, I>(mem: &M, descriptors: I) -> Result<[u8; 32], DigestError>
where
    M: GuestMemory + ?Sized,
    I: IntoIterator<Item = Descriptor>,
{
    let mut hash = Sha256::new();
    let mut total: u64 = 0;
    let mut piece = [0u8; PIECE];
    for d in descriptors.into_iter().filter(|d| !d.is_write_only()) {
        total += u64::from(d.len());
        if total > MAX_OUTPUT_BYTES {
            return Err(DigestError::TooLong);
        }
        let outside = || DigestError::OutOfMemory {
            addr: d.addr().0,
            len: d.len(),
        };
        let mut done: u64 = 0;
        while done < u64::from(d.len()) {
            // At most PIECE (4 KiB): fits a usize.
            let n = usize::try_from((u64::from(d.len()) - done).min(PIECE as u64)).unwrap_or(PIECE);
            let at = d.addr().0.checked_add(done).ok_or_else(outside)?;
            mem.read_slice(&mut piece[..n], GuestAddress(at))
                .map_err(|_| outside())?;
            hash.update(&piece[..n]);
            done += n as u64;
        }
    }
    Ok(hash.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    // The flag bits are 1 and 2 (virtio 1.2 section 2.7.5): they fit a u16.
    #[allow(clippy::cast_possible_truncation)]
    const F_NEXT: u16 = virtio_bindings::bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
    #[allow(clippy::cast_possible_truncation)]
    const F_WRITE: u16 = virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE as u16;

    fn sha(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x40_0000)]).expect("memory")
    }

    #[test]
    fn readable_bytes_in_chain_order_writable_skipped_big_descriptors_streamed() {
        let m = mem();
        let big: Vec<u8> = (0..3 * PIECE + 17)
            .map(|i| u8::try_from(i % 251).expect("below 251"))
            .collect();
        m.write_slice(b"head", GuestAddress(0x10_0000)).expect("w");
        m.write_slice(&big, GuestAddress(0x20_0000)).expect("w");
        m.write_slice(b"WRITABLE", GuestAddress(0x30_0000))
            .expect("w");
        let vq = MockSplitQueue::new(&m, 16);
        let descs = [
            RawDescriptor::from(Descriptor::new(0x10_0000, 4, F_NEXT, 1)),
            RawDescriptor::from(Descriptor::new(
                0x20_0000,
                u32::try_from(big.len()).expect("12 KiB"),
                F_NEXT,
                2,
            )),
            RawDescriptor::from(Descriptor::new(0x30_0000, 8, F_WRITE, 0)),
        ];
        let chain = vq.build_multiple_desc_chains(&descs).expect("chain");
        let mut want = b"head".to_vec();
        want.extend_from_slice(&big);
        assert_eq!(chain_digest(&m, chain), Ok(sha(&want)));
    }

    #[test]
    fn descriptors_outside_memory_and_oversized_chains_are_errors() {
        let m = mem();
        let outside = [Descriptor::new(0x3f_fff0, 0x20, 0, 0)];
        assert_eq!(
            chain_digest(&m, outside),
            Err(DigestError::OutOfMemory {
                addr: 0x3f_fff0,
                len: 0x20
            })
        );
        let wraps = [Descriptor::new(u64::MAX - 2, 8, 0, 0)];
        assert!(matches!(
            chain_digest(&m, wraps),
            Err(DigestError::OutOfMemory { .. })
        ));
        // The bound holds before anything is read: 17 descriptors of 4 MiB.
        let many = vec![Descriptor::new(0, 4 << 20, 0, 0); 17];
        assert_eq!(chain_digest(&m, many), Err(DigestError::TooLong));
        // Writable ones count for nothing, however large.
        let writable = [Descriptor::new(0, u32::MAX, F_WRITE, 0)];
        assert_eq!(chain_digest(&m, writable), Ok(sha(b"")));
    }
}
