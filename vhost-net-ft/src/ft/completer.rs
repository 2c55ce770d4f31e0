//! The data path's completer when an FT link exists: per chain, under the link lock, either
//! the plain thing ([`GuestCompleter`]) or, while an FT primary is attached, the FT thing.
//!
//! FT (role `Primary`), determinism contract point 4: the backend does not write guest memory,
//! the used ring or the call eventfd. It sends `Completion { queue, head, len, writes }`
//! carrying exactly the bytes it would have written (RX: virtio-net header + frame, split
//! over the chain's writable buffers) and the used length; the VMM applies it at a landmark,
//! where the backup can reproduce it. The backend still advances its own used index as if it
//! had added the element, because the VMM puts it in that very slot: after a switch back to
//! plain mode the backend's next used element lands after the VMM's.
//!
//! A chain with a TX frame is not completed at once: the link holds it with its frame
//! (output rule) and sends its `Completion` only right after the frame has left the TAP
//! ([`crate::ft::link`]), so the log never records a TX completion whose frame has not left.
//! A chain without frame of a queue that has held chains waits behind them (completions of a
//! queue reach the VMM in chain order). The used slots of completions sent later, maybe by
//! the FT reader thread, are counted in the queue's [`VmmSlots`] and added to its next used
//! index here, under the link lock, before anything else uses it.

use std::sync::Arc;

use ft_control::{MemWrite, Message};
use log::error;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use crate::ft::link::{FtLink, VmmSlots};
use crate::net::chain::plan_writes;
use crate::net::completion::{Completer, Completion, FinishError, Finished, GuestCompleter, Job};
use crate::net::stats::NetStats;

/// Completer of the worker thread: FT or plain per chain, following the link's role.
pub struct FtCompleter<'a> {
    link: &'a FtLink,
    /// The VMM's slots of the queue this completer finishes chains of (one per queue and
    /// frontend connection, outliving the batch: held chains count their slot there later).
    slots: &'a Arc<VmmSlots>,
    guest_used: usize,
}

impl<'a> FtCompleter<'a> {
    /// A completer for one batch of chains of the queue whose VMM slots are `slots`.
    pub fn new(link: &'a FtLink, slots: &'a Arc<VmmSlots>) -> Self {
        FtCompleter {
            link,
            slots,
            guest_used: 0,
        }
    }
}

/// The `Completion` message for a job (nothing is written to guest memory).
fn completion_message(job: &Job<'_>) -> Result<(Completion, Message), FinishError> {
    let (len, writes) = match job.write {
        Some((segs, data)) => {
            let writes = plan_writes(segs, data)?
                .into_iter()
                .map(|(addr, piece)| MemWrite {
                    gpa: addr.0,
                    data: piece.to_vec(),
                })
                .collect();
            // A chain's bytes: at most the queue size times a u32 descriptor length; the used
            // length is a u32 (virtio 1.2 section 2.7.8).
            (u32::try_from(data.len()).unwrap_or(u32::MAX), writes)
        }
        None => (0, Vec::new()),
    };
    let c = Completion {
        head: job.head,
        len,
    };
    let msg = Message::Completion {
        queue: job.queue_index,
        head: job.head,
        len,
        writes,
    };
    Ok((c, msg))
}

impl Completer for FtCompleter<'_> {
    fn finish<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
        mut job: Job<'_>,
    ) -> Result<Finished, FinishError> {
        let mut st = self.link.lock();
        // Completions sent since the last chain (frames that left since) took their slots.
        self.slots.count_in(queue);
        if st.is_primary() {
            let (completion, msg) = completion_message(&job)?;
            if job.output.is_some() || st.holds(job.queue_index) {
                // Completed only after its frame (and every frame before it) has left.
                match st.hold(
                    mem,
                    job.queue_index,
                    job.head,
                    job.output.take(),
                    msg,
                    self.slots,
                ) {
                    Ok(()) => {
                        // A release may already have covered it.
                        self.slots.count_in(queue);
                        return Ok(Finished {
                            completion,
                            to_guest: false,
                        });
                    }
                    // Not reached: the link is primary under this very lock.
                    Err(frame) => job.output = frame,
                }
            } else if st.send(&msg).is_ok() {
                NetStats::inc(&self.link.stats.ft_completions);
                // The VMM writes this used element into slot `next_used`; keep counting so
                // that plain-mode completions after a switch go after it.
                queue.set_next_used(queue.next_used().wrapping_add(1));
                return Ok(Finished {
                    completion,
                    to_guest: false,
                });
            } else {
                // Sending failed: the link is back in plain mode; complete it ourselves.
                error!(
                    "FT: completion of chain {} (queue {}) could not be sent; completing it in plain mode",
                    job.head, job.queue_index
                );
            }
        }
        let mut plain = GuestCompleter::new(&mut st.out, &self.link.stats);
        let done = plain.finish(queue, mem, job)?;
        self.guest_used += 1;
        Ok(done)
    }

    fn guest_used(&self) -> usize {
        self.guest_used
    }
}
