//! Fault-tolerant ("FT") mode: the backend's side of the FT control channel
//! (`ft_control`, docs/PROTOCOL.md "FT control channel").
//!
//! With `--ft-socket PATH` the backend also listens there for one VMM at a time
//! ([`server::FtServer`]). The VMM's `Hello` names a role:
//! - `Primary` (FT mode). Determinism contract (design brief, point 4): the backend does not
//!   write guest memory, the used ring or the call eventfd; each finished chain becomes a
//!   `Completion` message carrying the writes, which the VMM applies at a landmark and logs
//!   ([`completer::FtCompleter`]). Output rule: each TX frame gets an id, is announced with
//!   `OutputReady` (digest over the chain's readable bytes) and is held until the VMM sends
//!   `Release` with an id at least as large — which it does once the backup has the log up
//!   to it; frames leave in id order ([`link::FtLink`]). The TX chain itself is completed at
//!   once (only the frame is delayed), so the guest may reuse its buffer.
//! - `Live` (plain mode): exactly the plain vhost-user backend; also the state without any
//!   VMM connected. `SetRole { Live }` and the loss of the connection switch to it and let
//!   every held frame leave at once; `SetRole { Primary }` switches back.
//!
//! The data path ([`crate::net`]) knows nothing of this: it hands every finished chain to a
//! `Completer`, and the worker thread's completer is an [`completer::FtCompleter`], which
//! decides per chain, under the link lock, which way it goes.

pub mod completer;
pub mod link;
pub mod server;

pub use completer::FtCompleter;
pub use link::FtLink;
pub use server::FtServer;

#[cfg(test)]
mod tests;
