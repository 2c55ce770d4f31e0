//! Which requests are *outputs* in FT mode, and their digests.
//!
//! Output rule (docs/design-brief.md, "Replication"): a request that changes or orders the
//! disk must not reach the NBD server before the backup has the log up to it, because after a
//! failover the backup's guest must find the disk exactly as its own (replayed) execution
//! left it. Those requests are OUT (write), DISCARD and FLUSH. The classification depends
//! only on the request type of a chain that parsed, never on run-time state (read-only disk,
//! NBD flags), so that the backup, which sees the same chains, agrees with it.
//!
//! The digest lets the backup check that it would have produced the same output
//! (determinism contract, point 6): `ft_control::digest::chain_digest`, the function the
//! backup VMM's check calls too, over the chain's readable bytes (the 16-byte header, then
//! the write data, discard segments or anything else the driver put in readable
//! descriptors). It reads them from guest memory when the request is announced, right after
//! the parser copied them: the buffers of an available chain are the device's until it is
//! used (virtio 1.2 section 2.7), so both reads see the same bytes.

use ft_control::digest::chain_digest;
use virtio_queue::DescriptorChain;
use vm_memory::GuestMemory;

use super::request::{Request, RequestKind};

/// Whether `req` is an output (held in FT mode until the VMM releases it).
pub fn is_output(req: &Request) -> bool {
    matches!(
        req.kind,
        RequestKind::Out { .. } | RequestKind::Discard { .. } | RequestKind::Flush
    )
}

/// The output digest of the chain of a parsed request. The parser has checked every
/// descriptor against guest memory and bounded the total, so this fails only if the guest
/// rewrote its descriptors meanwhile; the output is then announced with a digest of zeros,
/// which the backup reports as a divergence (the output itself is held as any other).
pub fn digest<M, C>(mem: &M, chain: DescriptorChain<C>) -> [u8; 32]
where
    M: GuestMemory + ?Sized,
    C: std::ops::Deref,
    C::Target: GuestMemory,
{
    let head = chain.head_index();
    chain_digest(mem, chain).unwrap_or_else(|e| {
        log::error!("output digest of chain {head}: {e}; announced as zeros");
        [0; 32]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blk::request::parse;
    use virtio_bindings::virtio_blk::VIRTIO_BLK_T_OUT;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    fn req(kind: RequestKind) -> Request {
        Request {
            head: 3,
            kind,
            status_addr: GuestAddress(0x1000),
        }
    }

    #[test]
    fn only_disk_changing_requests_are_outputs() {
        let out = req(RequestKind::Out {
            sector: 1,
            data: vec![9; 512],
        });
        assert!(is_output(&out));
        assert!(is_output(&req(RequestKind::Flush)));
        assert!(is_output(&req(RequestKind::Discard { ranges: vec![] })));
        let read = req(RequestKind::In {
            sector: 0,
            segs: vec![],
            len: 0,
        });
        assert!(!is_output(&read));
        assert!(!is_output(&req(RequestKind::GetId { segs: vec![] })));
        assert!(!is_output(&req(RequestKind::Unsupported(99))));
    }

    #[test]
    fn the_digest_covers_the_header_then_the_data_the_parser_copied() {
        let m: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("mem");
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
        header[8..].copy_from_slice(&5u64.to_le_bytes());
        let data: Vec<u8> = (0..512u32).map(|i| (i * 7).to_le_bytes()[0]).collect();
        m.write_slice(&header, GuestAddress(0x8000)).expect("w");
        m.write_slice(&data, GuestAddress(0x9000)).expect("w");
        let flag = |f: u32| u16::try_from(f).expect("a flag bit");
        let (next, write) = (flag(VRING_DESC_F_NEXT), flag(VRING_DESC_F_WRITE));
        // Header and data split differently from the request's fields: 10 + 6+200 + 312.
        let descs = [
            Descriptor::new(0x8000, 10, next, 1),
            Descriptor::new(0x800a, 6, next, 2),
            Descriptor::new(0x9000, 200, next, 3),
            Descriptor::new(0x9000 + 200, 312, next, 4),
            Descriptor::new(0xa000, 1, write, 0),
        ]
        .map(RawDescriptor::from);
        let vq = MockSplitQueue::new(&m, 16);
        let chain = vq.build_multiple_desc_chains(&descs).expect("chain");
        let got = digest(&m, chain.clone());
        let parsed = parse(chain).expect("a valid write");
        assert_eq!(
            parsed.kind,
            RequestKind::Out {
                sector: 5,
                data: data.clone()
            }
        );
        let mut all = header.to_vec();
        all.extend_from_slice(&data);
        assert_eq!(got, vhost_harness::output_digest([&all[..]]));
    }
}
