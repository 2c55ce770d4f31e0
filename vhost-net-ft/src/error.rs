//! Error types of the backend.
//!
//! Errors on the data path ([`ChainError`], [`HdrError`]) are per frame or per descriptor chain:
//! they are logged and counted, the offending chain is completed with length 0 and the backend
//! keeps serving. Errors in [`TapError`] and [`ServeError`] are set-up errors.

use std::io;

use crate::net::hdr::{MAX_FRAME_LEN, VNET_HDR_LEN};

/// Opening or configuring the TAP device failed.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name does not fit `IFNAMSIZ` or contains forbidden characters.
    #[error("invalid TAP interface name {0:?}: 1 to 15 bytes, no NUL, '/', ':' or whitespace")]
    InvalidName(String),
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    /// `TUNSETIFF` failed.
    #[error("TUNSETIFF({name}, IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) failed: {source}")]
    SetIff {
        /// Interface name.
        name: String,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// `TUNSETVNETHDRSZ` failed.
    #[error("TUNSETVNETHDRSZ({VNET_HDR_LEN}) failed: {0}")]
    SetVnetHdrSz(#[source] io::Error),
    /// `TUNSETOFFLOAD` failed.
    #[error("TUNSETOFFLOAD(0) failed: {0}")]
    SetOffload(#[source] io::Error),
    /// Setting `O_NONBLOCK` failed.
    #[error("cannot make the TAP file descriptor non-blocking: {0}")]
    NonBlocking(#[source] io::Error),
    /// Bringing the interface administratively up failed.
    #[error("cannot set {name} up: {source}")]
    LinkUp {
        /// Interface name.
        name: String,
        /// OS error.
        #[source]
        source: io::Error,
    },
}

/// A MAC address given on the command line could not be parsed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex bytes such as 52:54:00:12:34:56")]
pub struct MacError(pub String);

/// A virtio-net header (or the frame behind it) is not acceptable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HdrError {
    /// Flags that need an offload feature that was not negotiated.
    #[error("unsupported header flags {0:#04x} (no checksum offload negotiated)")]
    Flags(u8),
    /// Segmentation offload requested without the feature.
    #[error("unsupported gso_type {0:#04x} (no segmentation offload negotiated)")]
    Gso(u8),
    /// Fewer bytes than a virtio-net header.
    #[error("{0} bytes is shorter than the {VNET_HDR_LEN}-byte virtio-net header")]
    NoHeader(usize),
    /// The frame is shorter than an Ethernet header.
    #[error("frame of {0} bytes is shorter than an Ethernet header")]
    Runt(usize),
    /// The frame is longer than the backend accepts.
    #[error("frame of {0} bytes is longer than the maximum of {MAX_FRAME_LEN}")]
    TooLong(usize),
}

/// A descriptor chain offered by the driver is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The chain has no descriptor (its head or indirect table could not be read).
    #[error("descriptor chain is empty or its first descriptor cannot be read")]
    Empty,
    /// A descriptor is device-readable where it must be device-writable or vice versa.
    #[error("descriptor {index} of the chain is {found}, expected {expected}")]
    WrongDirection {
        /// Position of the descriptor in the chain.
        index: usize,
        /// What it is.
        found: &'static str,
        /// What it should have been.
        expected: &'static str,
    },
    /// A descriptor points (partly) outside guest memory.
    #[error("descriptor {index} [{addr:#x}, +{len:#x}) lies outside guest memory")]
    OutOfMemory {
        /// Position of the descriptor in the chain.
        index: usize,
        /// Guest physical address.
        addr: u64,
        /// Length in bytes.
        len: u32,
    },
    /// The chain ends in a descriptor that still has `NEXT` set: invalid next index, a loop,
    /// an unreadable descriptor or more than 4 GiB in total.
    #[error("descriptor chain is broken (bad next index, loop, unreadable descriptor or > 4 GiB)")]
    Broken,
    /// The chain is smaller than required.
    #[error("descriptor chain too short: {have} bytes, need at least {need}")]
    TooShort {
        /// Bytes available.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The chain is larger than any acceptable frame.
    #[error("descriptor chain too long: {have} bytes, at most {max}")]
    TooLong {
        /// Bytes in the chain.
        have: usize,
        /// Maximum accepted.
        max: usize,
    },
    /// Reading or writing guest memory failed.
    #[error("guest memory access failed: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// The virtio-net header in a TX chain is not acceptable.
    #[error("bad virtio-net header: {0}")]
    Header(#[from] HdrError),
}

/// The used ring could not be updated: the queue itself is unusable.
#[derive(Debug, thiserror::Error)]
#[error("cannot put head {head} on the used ring: {source}")]
pub struct UsedRingError {
    /// Head index of the chain.
    pub head: u16,
    /// The virtio-queue error.
    #[source]
    pub source: virtio_queue::Error,
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the vhost-user socket failed.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// Socket path.
        path: String,
        /// Why (the socket rules of `ft_control::local`, or the guard's thread).
        #[source]
        source: vhost_user_guard::GuardError,
    },
    /// Creating the vhost-user daemon (vrings, worker thread) failed.
    #[error("cannot create the vhost-user daemon: {0}")]
    Daemon(String),
    /// The backend lock was poisoned by a panic in another thread.
    #[error("backend state lock poisoned")]
    Poisoned,
}
