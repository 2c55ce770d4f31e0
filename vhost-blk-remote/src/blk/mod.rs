//! The virtio-blk device (virtio 1.2, section 5.2) served over vhost-user.
//!
//! - [`config`]: features and configuration space.
//! - [`request`]: parsing and validation of descriptor chains.
//! - [`executor`]: running requests against NBD, producing completions.
//! - [`completion`]: the completion type, the in-order sequencer and the sinks that apply
//!   completions to guest memory (the seam where FT's bounce buffer goes).
//! - [`backend`]: the `VhostUserBackend` implementation.

pub mod backend;
pub mod completion;
pub mod config;
pub mod executor;
pub mod request;

pub use backend::{BackendOptions, BlkBackend};
pub use completion::{Completion, CompletionSink, Sequencer};
pub use config::DeviceConfig;
pub use executor::Executor;
