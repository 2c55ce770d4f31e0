//! Fault tolerance: a primary VMM records every non-deterministic input at its landmark and
//! streams it to a backup VMM, which replays it at the same landmarks. The engine (the
//! determinism contract, the recorder and the replayer) is `engine`; the rest is the
//! logging channel, joins, failover and the arbiter client (docs/ARCHITECTURE.md, "Fault
//! tolerance"; wire format in docs/PROTOCOL.md).

mod arbiter_ask;
pub mod backup;
pub mod channel;
pub mod dirty;
pub mod engine;
pub mod etcd_ask;
pub mod failover;
pub mod join;
pub mod joiner;
pub mod link;
pub mod precopy;
pub mod primary;
pub mod record;
pub mod signature;
pub mod state;
mod status;
mod takeover;
pub mod timers;
