//! The virtio-net device (virtio 1.2, section 5.1): queue 0 receives, queue 1 transmits.
//!
//! # Data path and where fault tolerance plugs in
//!
//! The design brief's determinism contract (point 4) says that in FT mode a backend never
//! writes guest memory on its own: the VMM applies completed work at a landmark. Its output
//! rule says the primary holds every outgoing packet until the backup has acknowledged the log
//! up to the position current when the packet was produced. The data path is therefore cut
//! into steps that only read (the TAP, guest memory) and one step that finishes a chain, a
//! [`completion::Completer`]:
//!
//! ```text
//!  RX   TAP --read--> RxFrame --[RxBounce]--> pop chain, validate --> Completer::finish
//!       (rx::fill_one: arrival)               (rx::apply_rx_frame / deliver_pending)
//!
//!  TX   kick --> pop chain, copy --> TxFrame --> Completer::finish (frame + chain)
//!                (tx::pop_tx: production)       (tx::run_tx)
//!
//!  Completer  plain (GuestCompleter): write the data, release the frame to the TAP, used
//!             ring, then the caller notifies the guest (call eventfd)
//!             FT primary (crate::ft::FtCompleter): Completion message with the writes to the
//!             VMM; TX: frame announced (OutputReady) and held until Release, the chain's
//!             Completion sent right after the frame has left
//! ```
//!
//! - *Arrival* ([`rx::fill_one`]) reads one packet from the TAP into an [`rx::RxFrame`] in the
//!   [`rx::RxBounce`] buffer; it touches no guest memory. *Apply* ([`rx::deliver_pending`])
//!   pops the next RX chain, validates it and hands it with the frame to the completer.
//!   [`rx::run_rx`] runs both back to back with a bounce capacity of one frame.
//! - *Production* ([`tx::pop_tx`]) only reads guest memory: it turns each available TX chain
//!   into a [`tx::TxFrame`] (or the reason it is refused), which [`tx::run_tx`] hands with the
//!   chain to the completer.
//! - The guest is notified (call eventfd) only for chains the backend completed itself; in FT
//!   mode the VMM injects the interrupt at a landmark (no irqfd).
//! - When the frontend starts the rings the guest MAC is announced on the TAP
//!   ([`announce`], RARP as QEMU's `qemu_announce_self`).
//!
//! Used entries are always completed in avail order: chains are taken one after the other
//! and each is completed (possibly with length 0 when refused) before the next is taken,
//! except that a valid RX chain too small for an oversized frame is given back untouched.
//!
//! # Validation
//! Every descriptor is checked ([`chain`]): direction, inside guest memory, chain not broken,
//! long enough. A refused chain is logged, counted ([`stats`]) and completed with length 0
//! (TX: consumed; RX: returned unused); the backend keeps serving.

pub mod announce;
pub mod backend;
pub mod chain;
pub mod completion;
pub mod config;
pub mod hdr;
pub mod metrics;
pub mod rx;
pub mod stats;
pub mod tx;

#[cfg(test)]
pub(crate) mod testutil;
