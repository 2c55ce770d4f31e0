//! The completion sink used when the backend has an FT socket.
//!
//! In FT mode a completion is not applied: it becomes a `Completion` message carrying
//! exactly the guest-memory writes [`VringSink`] would have made (the data scattered over
//! the writable buffers, then the status byte) and the used length it would have put in the
//! used element. The VMM applies it at a landmark and logs it (determinism contract,
//! point 4: a device write the guest could observe at an arbitrary instruction cannot be
//! replayed). The [`Sequencer`](super::Sequencer) calls sinks in avail order, so the VMM gets
//! completions in the order the plain backend would have used them.
//!
//! In plain mode (nobody connected, `Role::Live`) it is exactly [`VringSink`].

use std::sync::Arc;

use ft_control::{MemWrite, Message, MAX_FRAME};
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap};

use super::completion::{Completion, CompletionSink, VringSink};
use crate::ft::Ft;

/// The (only) virtqueue of the device, as named in FT messages.
pub const QUEUE: u16 = 0;

/// Routes each completion to the VMM (FT mode) or to the vring (plain mode).
pub struct FtSink {
    plain: VringSink,
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
    vring: VringRwLock,
    ft: Arc<Ft>,
}

impl FtSink {
    pub fn new(mem: GuestMemoryAtomic<GuestMemoryMmap>, vring: VringRwLock, ft: Arc<Ft>) -> Self {
        FtSink {
            plain: VringSink::new(mem.clone(), vring.clone()),
            mem,
            vring,
            ft,
        }
    }

    /// The VMM writes this used element itself; advance our used position past it without
    /// writing anything, so that after a switch back to plain mode our own entries follow
    /// the VMM's, and a rewind at `GET_VRING_BASE` stops at the right index.
    fn skip_used(&self) {
        let mut state = self.vring.get_mut();
        let q = state.get_queue_mut();
        let next = q.next_used().wrapping_add(1);
        q.set_next_used(next);
    }
}

impl CompletionSink for FtSink {
    fn apply(&mut self, c: Completion) {
        let mem = &self.mem;
        if self.ft.send_completion(|| to_message(&*mem.memory(), &c)) {
            self.skip_used();
        } else {
            self.plain.apply(c);
        }
    }

    fn batch_done(&mut self) {
        // Signals only if the plain sink added used entries (never for FT completions).
        self.plain.batch_done();
    }
}

/// Bytes of a `Completion` frame body with `writes` (type byte, fixed fields, writes).
fn frame_len(writes: &[MemWrite]) -> usize {
    1 + 2 + 2 + 4 + 4 + writes.iter().map(|w| 12 + w.data.len()).sum::<usize>()
}

/// The `Completion` message equivalent to applying `c` with [`VringSink`].
pub fn to_message<M: GuestMemoryBackend + ?Sized>(mem: &M, c: &Completion) -> Message {
    let ioerr = crate::blk::status::IOERR;
    let mut writes = Vec::new();
    let mut status = c.status;
    let mut off = 0usize;
    for s in &c.data_segs {
        if off >= c.data.len() {
            break;
        }
        let n = (s.len as usize).min(c.data.len() - off);
        // Same outcome as `scatter` in the plain sink: writes up to the first buffer that is
        // not in guest memory, then an I/O error status.
        if !GuestMemoryBackend::check_range(mem, s.addr, n) {
            log::error!("request {}: data buffer outside guest memory", c.head);
            status = status.map(|_| ioerr);
            break;
        }
        writes.push(MemWrite {
            gpa: s.addr.0,
            data: c.data[off..off + n].to_vec(),
        });
        off += n;
    }
    let mut len = c.len;
    if frame_len(&writes) + 13 > MAX_FRAME {
        // The VMM would refuse the frame (and drop the connection). Fail the request
        // instead; the outcome depends only on the request's size, so it is deterministic.
        log::error!(
            "request {}: {} bytes of read data exceed the FT frame limit; failing it",
            c.head,
            off
        );
        writes.clear();
        status = status.map(|_| ioerr);
        len = u32::from(c.status_addr.is_some());
    }
    if let (Some(s), Some(a)) = (status, c.status_addr) {
        writes.push(MemWrite {
            gpa: a.0,
            data: vec![s],
        });
    }
    Message::Completion {
        queue: QUEUE,
        head: c.head,
        len,
        writes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blk::request::Segment;
    use vm_memory::GuestAddress;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn seg(addr: u64, len: u32) -> Segment {
        Segment {
            addr: GuestAddress(addr),
            len,
        }
    }

    #[test]
    fn read_completion_becomes_data_writes_then_status() {
        let c = Completion {
            head: 5,
            len: 1025,
            status: Some(0),
            status_addr: Some(GuestAddress(0x3000)),
            data: (0..1024u32).map(|i| i.to_le_bytes()[0]).collect(),
            data_segs: vec![seg(0x1000, 100), seg(0x2000, 924)],
        };
        let Message::Completion {
            queue,
            head,
            len,
            writes,
        } = to_message(&mem(), &c)
        else {
            panic!("not a completion");
        };
        assert_eq!((queue, head, len), (0, 5, 1025));
        assert_eq!(writes.len(), 3);
        assert_eq!(
            (writes[0].gpa, &writes[0].data[..]),
            (0x1000, &c.data[..100])
        );
        assert_eq!(
            (writes[1].gpa, &writes[1].data[..]),
            (0x2000, &c.data[100..])
        );
        assert_eq!((writes[2].gpa, &writes[2].data[..]), (0x3000, &[0u8][..]));
    }

    #[test]
    fn status_only_and_statusless_completions() {
        let c = Completion::status_only(9, Some(GuestAddress(0x10)), 2);
        let m = to_message(&mem(), &c);
        let want = Message::Completion {
            queue: 0,
            head: 9,
            len: 1,
            writes: vec![MemWrite {
                gpa: 0x10,
                data: vec![2],
            }],
        };
        assert_eq!(m, want);
        let c = Completion::status_only(9, None, 1);
        let want = Message::Completion {
            queue: 0,
            head: 9,
            len: 0,
            writes: vec![],
        };
        assert_eq!(to_message(&mem(), &c), want);
    }

    #[test]
    fn buffers_outside_memory_and_oversized_reads_fail_with_ioerr() {
        let mut c = Completion {
            head: 1,
            len: 1025,
            status: Some(0),
            status_addr: Some(GuestAddress(0x3000)),
            data: vec![7; 1024],
            data_segs: vec![seg(0x1000, 512), seg(0x20000, 512)],
        };
        let Message::Completion { writes, len, .. } = to_message(&mem(), &c) else {
            panic!("not a completion");
        };
        assert_eq!(len, 1025, "same used length as the plain sink");
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[1].data, vec![crate::blk::status::IOERR]);

        c.data = vec![7; MAX_FRAME];
        c.data_segs = vec![seg(0, u32::try_from(MAX_FRAME).expect("40 MiB"))];
        let big =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MAX_FRAME + 0x4000)]).unwrap();
        let Message::Completion { writes, len, .. } = to_message(&big, &c) else {
            panic!("not a completion");
        };
        assert_eq!(len, 1);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].data, vec![crate::blk::status::IOERR]);
    }
}
