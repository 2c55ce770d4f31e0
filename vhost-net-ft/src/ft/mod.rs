//! Fault-tolerant ("FT") mode: the backend's side of the FT control channel
//! (`ft_control`, docs/PROTOCOL.md "FT control channel").
//!
//! With `--ft-socket PATH` the backend also listens there for one VMM at a time
//! (`ft_backend::FtServer`, shared with vhost-blk-remote; [`FtLink`] is what it drives). The VMM's `Hello` names a role:
//! - `Primary` (FT mode). Determinism contract (design brief, point 4): the backend does not
//!   write guest memory, the used ring or the call eventfd; each finished chain becomes a
//!   `Completion` message carrying the writes, which the VMM applies at a landmark and logs
//!   ([`completer::FtCompleter`]). Output rule: each TX frame gets an id, is announced with
//!   `OutputReady` (digest over the chain's readable bytes) and is held until the VMM sends
//!   `Release` with an id at least as large — which it does once the backup has the log up
//!   to it; frames leave in id order ([`link::FtLink`]). The TX chain is held with its frame:
//!   its `Completion` is sent right after the frame has been written to the TAP, in id order
//!   (a refused TX chain waits behind the held ones). So an output's completion is logged
//!   only after the output has left: a backup that goes live either knows that the frame
//!   left (the chain is completed in its guest) or finds the chain still pending in the TX
//!   ring, and its backend, starting the ring at the used index, sends the frame again (a
//!   duplicate at worst, which the guest's protocols handle). Completing the chain at once
//!   instead would let the backup's guest believe in a frame that never left: a reply lost
//!   until the guest's TCP retransmits it, seconds later.
//! - `Live` (plain mode): exactly the plain vhost-user backend; also the state without any
//!   VMM connected. `SetRole { Live }` switches to it and lets every held frame leave at once,
//!   each followed by its chain's completion (an explicit decision of the VMM, which has won
//!   the arbiter); `SetRole { Primary }` switches back.
//!
//! The end of the FT connection, for whatever reason (EOF, read or write error, garbage, a
//! new VMM's `Hello` replacing it, a failed send), also switches to plain mode, but
//! *discards* the held frames: they are never written to the TAP (logged with `warn!` and
//! counted in `ft_outputs_discarded`) and their chains are never completed (the VMM that
//! would apply the completions is gone). A held frame is one the backup has not
//! acknowledged; when the primary VMM goes away (killed, or halted after losing the
//! arbiter's test-and-set) the backup may go live from an earlier log position, and the
//! world must never see an output that the surviving execution did not produce. The
//! survivor re-executes: the chain was never completed in its log, so it sends the frame
//! itself if its guest still produces it.
//!
//! The data path ([`crate::net`]) knows nothing of this: it hands every finished chain to a
//! `Completer`, and the worker thread's completer is an [`completer::FtCompleter`], which
//! decides per chain, under the link lock, which way it goes.

pub mod completer;
pub mod link;

pub use completer::FtCompleter;
pub use link::{FtLink, VmmSlots};

#[cfg(test)]
mod tests;
