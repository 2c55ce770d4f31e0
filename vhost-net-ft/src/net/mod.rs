//! The virtio-net device (virtio 1.2, section 5.1): queue 0 receives, queue 1 transmits.
//!
//! # Data path and where fault tolerance plugs in
//!
//! The design brief's determinism contract (point 4) says that in FT mode a backend never
//! writes guest memory on its own: completed work waits in a *bounce buffer* and is applied
//! when the VMM says so, at a landmark. Its output rule says the primary holds every outgoing
//! packet until the backup has acknowledged the log up to the position current when the packet
//! was produced, and the backup sends nothing. The data path is therefore cut into steps that
//! touch guest memory and steps that touch the outside world, joined by plain values:
//!
//! ```text
//!  RX   TAP --read--> RxFrame --[RxBounce]--> apply: pop chain, write, used ring --> notify
//!       (rx::fill_one: arrival)               (rx::apply_rx_frame / deliver_pending)
//!
//!  TX   kick --> pop chain, copy --> (Completion, TxFrame)
//!                (tx::pop_tx: production)  |          |
//!                                          |          +--> TxOutput::release --> TAP
//!                                          +--> completion::complete (used ring) --> notify
//! ```
//!
//! - *Arrival* ([`rx::fill_one`]) reads one packet from the TAP into an [`rx::RxFrame`] in the
//!   [`rx::RxBounce`] buffer; it touches no guest memory. *Apply* ([`rx::deliver_pending`])
//!   pops the next RX chain, validates it, writes the frame, puts the chain on the used ring.
//!   Plain mode ([`rx::run_rx`]) runs both back to back with a bounce capacity of one frame;
//!   the FT primary will let arrival fill a larger bounce buffer and run *apply* only on the
//!   VMM's command at a landmark (the VMM logs what was written); the backup ignores its TAP
//!   and applies the logged frames instead.
//! - *Production* ([`tx::pop_tx`]) only reads guest memory: it turns each available TX chain
//!   into a [`tx::TxFrame`] plus a [`completion::Completion`]. The completion is a used-ring
//!   write, so in FT mode it joins the bounce buffer and is applied at a landmark; plain mode
//!   ([`tx::run_tx`]) applies it at once. *Release* is the [`tx::TxOutput`] trait: plain mode
//!   uses [`tx::TapOutput`] (write now); the FT primary will use an output that holds frames
//!   until the backup's acknowledgement, the backup one that drops them.
//! - Notification (the call eventfd) is the last step of *apply*; in FT mode it becomes a
//!   message to the VMM, which injects the interrupt at a landmark (no irqfd).
//!
//! Used entries are always completed in avail order: chains are taken one after the other
//! and each is completed (possibly with length 0 when refused) before the next is taken,
//! except that a valid RX chain too small for an oversized frame is given back untouched.
//!
//! # Validation
//! Every descriptor is checked ([`chain`]): direction, inside guest memory, chain not broken,
//! long enough. A refused chain is logged, counted ([`stats`]) and completed with length 0
//! (TX: consumed; RX: returned unused); the backend keeps serving.

pub mod backend;
pub mod chain;
pub mod completion;
pub mod config;
pub mod hdr;
pub mod rx;
pub mod stats;
pub mod tx;

#[cfg(test)]
mod testutil;
