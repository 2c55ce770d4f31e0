//! `vhost-harness`: a minimal vhost-user *frontend* for testing vhost-user backends.
//!
//! It plays the VMM: memfd-backed guest memory shared with the backend, feature and
//! protocol-feature negotiation, `SET_MEM_TABLE`, split virtqueues laid out in guest memory
//! with kick/call eventfds, and helpers to drive them like a guest driver would.
//!
//! ```no_run
//! use std::time::Duration;
//! use vhost_harness::{Desc, Harness, HarnessConfig};
//!
//! let mut h = Harness::connect("/tmp/backend.sock", HarnessConfig::default()).unwrap();
//! let buf = h.alloc(512, 8).unwrap();
//! h.add_chain(0, &[Desc::writable(buf, 512)]).unwrap();
//! h.kick(0).unwrap();
//! let used = h.wait_used(0, 1, Duration::from_secs(5)).unwrap();
//! println!("{used:?}");
//! ```
//!
//! Guest memory is one region at guest physical address 0; the virtqueues sit at its start
//! and [`Harness::alloc`] hands out the rest. Tests may also write raw descriptors
//! ([`DriverQueue::write_desc`], [`DriverQueue::publish`]) to build malformed chains.
//! Everything returns [`HarnessError`]; nothing panics.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
mod garbage;
mod hostile;
mod memory;
mod queue;

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestAddress, GuestMemoryBackend};

pub use garbage::send_garbage;
pub use hostile::{closed_within, connect_from_child, send_short_memory_table, ChildIds};
pub use memory::GuestMem;

/// SHA-256 over `parts` in order: what an FT output's digest must be for a chain whose
/// readable bytes are `parts` (computed here independently of `ft_control::digest`).
pub fn output_digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}
pub use queue::{Desc, DriverQueue, UsedElem, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};

/// `VHOST_USER_F_PROTOCOL_FEATURES`.
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// `VIRTIO_RING_F_EVENT_IDX`.
pub const F_EVENT_IDX: u64 = 1 << 29;
/// `VIRTIO_F_VERSION_1`.
pub const F_VERSION_1: u64 = 1 << 32;
const F_ACCESS_PLATFORM: u64 = 1 << 33;
const F_RING_PACKED: u64 = 1 << 34;

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("vhost-user error: {0}")]
    Vhost(#[from] vhost::Error),
    #[error("setup error: {0}")]
    Setup(String),
    #[error("guest memory access failed: {0}")]
    Memory(String),
    #[error("no such queue {0}")]
    NoQueue(usize),
    #[error("not enough free descriptors")]
    QueueFull,
    #[error("timed out waiting for the backend")]
    Timeout,
}

/// How to set the device up.
#[derive(Debug, Clone)]
pub struct HarnessConfig {
    /// Guest memory size in bytes.
    pub mem_size: u64,
    /// Number of virtqueues to set up.
    pub num_queues: usize,
    /// Size of each virtqueue (power of two, at most the backend's maximum).
    pub queue_size: u16,
    /// Virtio features to acknowledge, among those offered (packed rings and
    /// ACCESS_PLATFORM are never acknowledged).
    pub feature_mask: u64,
    /// Protocol features to acknowledge, among those offered.
    pub protocol_mask: VhostUserProtocolFeatures,
    /// How long to retry connecting while the socket does not accept yet.
    pub connect_timeout: Duration,
}

impl Default for HarnessConfig {
    fn default() -> Self {
        HarnessConfig {
            mem_size: 16 << 20,
            num_queues: 1,
            queue_size: 256,
            feature_mask: u64::MAX,
            protocol_mask: VhostUserProtocolFeatures::CONFIG
                | VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::REPLY_ACK,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A connected vhost-user frontend with its guest memory and virtqueues.
pub struct Harness {
    socket: PathBuf,
    cfg: HarnessConfig,
    fe: Frontend,
    mem: GuestMem,
    queues: Vec<DriverQueue>,
    offered: u64,
    acked: u64,
    protocol: VhostUserProtocolFeatures,
}

pub(crate) fn connect_stream(path: &Path, timeout: Duration) -> Result<UnixStream, HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                log::debug!("connect {}: {e}; retrying", path.display());
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Harness {
    /// Connects to the backend listening on `socket` and sets the device up: owner,
    /// features, protocol features, memory table, every virtqueue (enabled, base 0).
    pub fn connect(socket: impl AsRef<Path>, cfg: HarnessConfig) -> Result<Self, HarnessError> {
        let mut mem = GuestMem::new(cfg.mem_size)?;
        let queues = (0..cfg.num_queues)
            .map(|_| DriverQueue::new(&mut mem, cfg.queue_size))
            .collect::<Result<Vec<_>, _>>()?;
        let stream = connect_stream(socket.as_ref(), cfg.connect_timeout)?;
        let mut h = Harness {
            socket: socket.as_ref().to_path_buf(),
            fe: Frontend::from_stream(stream, cfg.num_queues as u64),
            cfg,
            mem,
            queues,
            offered: 0,
            acked: 0,
            protocol: VhostUserProtocolFeatures::empty(),
        };
        h.setup(&vec![0; h.queues.len()])?;
        Ok(h)
    }

    fn setup(&mut self, bases: &[u16]) -> Result<(), HarnessError> {
        self.fe.set_owner()?;
        self.offered = self.fe.get_features()?;
        self.protocol = VhostUserProtocolFeatures::empty();
        if self.offered & F_PROTOCOL_FEATURES != 0 {
            let offered = self.fe.get_protocol_features()?;
            self.protocol = offered & self.cfg.protocol_mask;
            self.fe.set_protocol_features(self.protocol)?;
        }
        self.acked = self.offered & self.cfg.feature_mask & !(F_RING_PACKED | F_ACCESS_PLATFORM);
        self.fe.set_features(self.acked)?;
        let regions = self
            .mem
            .mmap()
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()?;
        self.fe.set_mem_table(&regions)?;
        let event_idx = self.acked & F_EVENT_IDX != 0;
        for (i, q) in self.queues.iter_mut().enumerate() {
            q.event_idx = event_idx;
            let cfg = VringConfigData {
                queue_max_size: q.size,
                queue_size: q.size,
                flags: 0,
                desc_table_addr: self.mem.host_addr(q.desc)?,
                used_ring_addr: self.mem.host_addr(q.used)?,
                avail_ring_addr: self.mem.host_addr(q.avail)?,
                log_addr: None,
            };
            self.fe.set_vring_num(i, q.size)?;
            self.fe.set_vring_addr(i, &cfg)?;
            self.fe
                .set_vring_base(i, bases.get(i).copied().unwrap_or(0))?;
            self.fe.set_vring_call(i, &q.call)?;
            self.fe.set_vring_kick(i, &q.kick)?;
            if self.acked & F_PROTOCOL_FEATURES != 0 {
                self.fe.set_vring_enable(i, true)?;
            }
        }
        Ok(())
    }

    /// Drops the connection and connects again to the same socket, keeping guest memory and
    /// the rings: like a VMM after a backend restart, every ring resumes at its used index
    /// (`SET_VRING_BASE` = used idx), so chains published but not yet used are processed
    /// again by the backend.
    pub fn reconnect(&mut self) -> Result<(), HarnessError> {
        let stream = connect_stream(&self.socket, self.cfg.connect_timeout)?;
        self.fe = Frontend::from_stream(stream, self.cfg.num_queues as u64);
        let bases = self
            .queues
            .iter()
            .map(|q| q.used_idx(&self.mem))
            .collect::<Result<Vec<_>, _>>()?;
        self.setup(&bases)
    }

    /// Closes the connection.
    pub fn disconnect(self) {}

    /// The raw frontend endpoint, for messages the harness does not wrap.
    pub fn frontend(&mut self) -> &mut Frontend {
        &mut self.fe
    }

    /// Features the backend offered.
    pub fn offered_features(&self) -> u64 {
        self.offered
    }
    /// Features acknowledged.
    pub fn acked_features(&self) -> u64 {
        self.acked
    }
    /// Protocol features acknowledged.
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    /// Reads `len` bytes of the device configuration space (`GET_CONFIG`).
    pub fn get_config(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, HarnessError> {
        let buf = vec![0u8; len as usize];
        let (_, payload) = self
            .fe
            .get_config(offset, len, VhostUserConfigFlags::WRITABLE, &buf)?;
        Ok(payload)
    }

    /// `GET_VRING_BASE`: stops the ring and returns the backend's avail position.
    pub fn get_vring_base(&mut self, queue: usize) -> Result<u32, HarnessError> {
        Ok(self.fe.get_vring_base(queue)?)
    }

    /// Guest memory.
    pub fn mem(&self) -> &GuestMem {
        &self.mem
    }
    /// Allocates a guest buffer (see [`GuestMem::alloc`]).
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<GuestAddress, HarnessError> {
        self.mem.alloc(len, align)
    }
    /// Writes guest memory.
    pub fn write(&self, addr: GuestAddress, data: &[u8]) -> Result<(), HarnessError> {
        self.mem.write(addr, data)
    }
    /// Reads guest memory.
    pub fn read(&self, addr: GuestAddress, len: usize) -> Result<Vec<u8>, HarnessError> {
        self.mem.read(addr, len)
    }

    /// A virtqueue, for raw access.
    pub fn queue(&mut self, queue: usize) -> Result<&mut DriverQueue, HarnessError> {
        self.queues
            .get_mut(queue)
            .ok_or(HarnessError::NoQueue(queue))
    }

    /// Writes a descriptor chain and publishes it in the avail ring (no kick). Returns the
    /// head index.
    pub fn add_chain(&mut self, queue: usize, descs: &[Desc]) -> Result<u16, HarnessError> {
        let q = self
            .queues
            .get_mut(queue)
            .ok_or(HarnessError::NoQueue(queue))?;
        q.add_chain(&self.mem, descs)
    }

    /// Writes descriptor `index` of `queue`'s table verbatim (for indirect or malformed
    /// chains; pick indices the free list does not hand out concurrently, e.g. the highest
    /// ones, which [`Harness::add_chain`] uses last).
    pub fn write_desc(
        &self,
        queue: usize,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result<(), HarnessError> {
        let q = self.queues.get(queue).ok_or(HarnessError::NoQueue(queue))?;
        q.write_desc(&self.mem, index, addr, len, flags, next)
    }

    /// Publishes a raw head index (after [`Harness::write_desc`]).
    pub fn publish(&mut self, queue: usize, head: u16) -> Result<(), HarnessError> {
        let q = self
            .queues
            .get_mut(queue)
            .ok_or(HarnessError::NoQueue(queue))?;
        q.publish(&self.mem, head)
    }

    /// Notifies the backend (writes the kick eventfd).
    pub fn kick(&self, queue: usize) -> Result<(), HarnessError> {
        let q = self.queues.get(queue).ok_or(HarnessError::NoQueue(queue))?;
        q.kick.write(1)?;
        Ok(())
    }

    /// Waits up to `timeout` for the call eventfd; `true` if it fired (and was consumed).
    pub fn wait_call(&self, queue: usize, timeout: Duration) -> Result<bool, HarnessError> {
        let q = self.queues.get(queue).ok_or(HarnessError::NoQueue(queue))?;
        let mut pfd = libc::pollfd {
            fd: q.call.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `pfd` is a valid pollfd and we pass a count of 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e.into())
            };
        }
        if r == 0 {
            return Ok(false);
        }
        match q.call.read() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The device's used index of `queue`, read from guest memory.
    pub fn used_idx(&self, queue: usize) -> Result<u16, HarnessError> {
        let q = self.queues.get(queue).ok_or(HarnessError::NoQueue(queue))?;
        q.used_idx(&self.mem)
    }

    /// Consumes the used entries that are there now.
    pub fn pop_used(&mut self, queue: usize) -> Result<Vec<UsedElem>, HarnessError> {
        let q = self
            .queues
            .get_mut(queue)
            .ok_or(HarnessError::NoQueue(queue))?;
        q.pop_used(&self.mem)
    }

    /// Waits until `n` used entries have been consumed (in used-ring order), or times out.
    /// Does not require a call notification (polls the used index as well).
    pub fn wait_used(
        &mut self,
        queue: usize,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<UsedElem>, HarnessError> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            out.extend(self.pop_used(queue)?);
            if out.len() >= n {
                return Ok(out);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HarnessError::Timeout);
            }
            self.wait_call(queue, (deadline - now).min(Duration::from_millis(50)))?;
        }
    }

    /// `add_chain` + `kick` + `wait_used(1)`.
    pub fn submit(
        &mut self,
        queue: usize,
        descs: &[Desc],
        timeout: Duration,
    ) -> Result<UsedElem, HarnessError> {
        self.add_chain(queue, descs)?;
        self.kick(queue)?;
        let mut v = self.wait_used(queue, 1, timeout)?;
        v.pop().ok_or(HarnessError::Timeout)
    }
}
