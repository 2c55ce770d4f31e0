//! The virtio-blk device (virtio 1.2, section 5.2) served over vhost-user.
//!
//! - [`config`]: features and configuration space.
//! - [`request`]: parsing and validation of descriptor chains.
//! - [`executor`]: running requests against NBD, producing completions.
//! - [`completion`]: the completion type, the in-order sequencer and the sinks that apply
//!   completions to guest memory (`CompletionSink` is where FT mode plugs in).
//! - [`ft_sink`]: the sink that sends completions to the VMM in FT mode.
//! - [`output`]: which requests are FT outputs, and their digests.
//! - [`backend`]: the `VhostUserBackend` implementation.

pub mod backend;
pub mod completion;
pub mod config;
pub mod executor;
pub mod ft_sink;
pub mod output;
pub mod request;

pub use backend::{BackendOptions, BlkBackend};
pub use completion::{Completion, CompletionSink, Sequencer};
pub use config::DeviceConfig;
pub use executor::Executor;

/// The virtio-blk status bytes (virtio 1.2 section 5.2.6), as the `u8` the device writes;
/// virtio-bindings has them as `u32`.
#[allow(clippy::cast_possible_truncation)] // 0, 1 and 2
pub mod status {
    use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP};

    pub const OK: u8 = VIRTIO_BLK_S_OK as u8;
    pub const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
    pub const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
}
