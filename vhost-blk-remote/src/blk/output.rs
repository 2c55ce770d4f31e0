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
//! (determinism contract, point 6): SHA-256 over the readable bytes of the chain in chain
//! order, i.e. the 16-byte header followed by the write data / discard segments / anything
//! else the driver put in readable descriptors. It is computed from the bytes copied out of
//! the guest at parse time (the bytes that will go to NBD), not re-read from guest memory.

use super::request::{Request, RequestKind};

/// Whether `req` is an output (held in FT mode until the VMM releases it).
pub fn is_output(req: &Request) -> bool {
    matches!(
        req.kind,
        RequestKind::Out { .. } | RequestKind::Discard { .. } | RequestKind::Flush { .. }
    )
}

/// The output digest of `req` (`None` for a request that is not an output).
pub fn digest(req: &Request) -> Option<[u8; 32]> {
    let hdr = &req.header[..];
    match &req.kind {
        RequestKind::Out { data, .. } => Some(ft_control::output_digest([hdr, data])),
        RequestKind::Flush { extra } => Some(ft_control::output_digest([hdr, extra])),
        RequestKind::Discard { ranges } => {
            // The parser keeps every field of the 16-byte segments, so re-encoding them gives
            // back exactly the readable bytes the guest supplied.
            let mut raw = Vec::with_capacity(ranges.len() * 16);
            for r in ranges {
                raw.extend_from_slice(&r.sector.to_le_bytes());
                raw.extend_from_slice(&r.num_sectors.to_le_bytes());
                raw.extend_from_slice(&r.flags.to_le_bytes());
            }
            Some(ft_control::output_digest([hdr, &raw[..]]))
        }
        RequestKind::In { .. } | RequestKind::GetId { .. } | RequestKind::Unsupported(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blk::request::DiscardRange;
    use vm_memory::GuestAddress;

    fn req(kind: RequestKind) -> Request {
        Request {
            head: 3,
            kind,
            status_addr: GuestAddress(0x1000),
            header: [7; 16],
        }
    }

    #[test]
    fn only_disk_changing_requests_are_outputs() {
        let out = req(RequestKind::Out {
            sector: 1,
            data: vec![9; 512],
        });
        assert!(is_output(&out));
        assert!(is_output(&req(RequestKind::Flush { extra: vec![] })));
        assert!(is_output(&req(RequestKind::Discard { ranges: vec![] })));
        let read = req(RequestKind::In {
            sector: 0,
            segs: vec![],
            len: 0,
        });
        assert!(!is_output(&read));
        assert!(!is_output(&req(RequestKind::GetId { segs: vec![] })));
        assert!(!is_output(&req(RequestKind::Unsupported(99))));
        assert_eq!(digest(&read), None);
    }

    #[test]
    fn digest_covers_header_then_payload() {
        let out = req(RequestKind::Out {
            sector: 1,
            data: vec![9; 512],
        });
        let mut all = vec![7u8; 16];
        all.extend_from_slice(&[9; 512]);
        assert_eq!(digest(&out), Some(ft_control::output_digest([&all[..]])));

        let d = req(RequestKind::Discard {
            ranges: vec![DiscardRange {
                sector: 0x0102,
                num_sectors: 8,
                flags: 1,
            }],
        });
        let mut all = vec![7u8; 16];
        all.extend_from_slice(&[2, 1, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(digest(&d), Some(ft_control::output_digest([&all[..]])));

        let f = req(RequestKind::Flush { extra: vec![] });
        assert_eq!(
            digest(&f),
            Some(ft_control::output_digest([&[7u8; 16][..]]))
        );
    }
}
