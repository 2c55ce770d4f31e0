//! A virtio device whose work is done by a vhost-user backend process (vhost-user protocol,
//! "Front-end message types"). The VMM keeps the transport and the interrupt path; the
//! backend maps guest memory (the memfd) and processes the rings.
//!
//! Interrupts: the backend signals a per-queue *call* eventfd; the event loop turns that into
//! a `DeviceEvent` and the vCPU thread raises the IRQ at a landmark. No irqfd.
//! Kicks: the guest's QueueNotify writes are caught by per-queue ioeventfds (the *kick* fds)
//! registered with KVM, and go straight to the backend.
//!
//! Reconnection: when the backend's socket hangs up, the device is marked disconnected and the
//! event loop asks for a reconnection attempt periodically. After a reconnect the device is
//! re-activated with the same features and rings, each ring resuming at the used index found
//! in guest memory (SET_VRING_BASE = used idx). Every request from there on is processed
//! again. Our backends complete requests in avail order, which makes this exact: nothing
//! submitted is lost and nothing is completed twice. A backend that completes out of order
//! would need VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD instead (not implemented).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{ActivateError, QueueConfig, VirtioBackend};
use crate::sync::lock;

/// VIRTIO_RING_F_EVENT_IDX (virtio 1.2 section 6).
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Protocol features we use when the backend offers them.
fn wanted_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK
}

#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    #[error("cannot connect to the vhost-user backend at {path}: {source}")]
    Connect { path: PathBuf, source: vhost::Error },
    #[error("vhost-user backend at {path}: {what} failed: {source}")]
    Request {
        path: PathBuf,
        what: &'static str,
        source: vhost::Error,
    },
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
}

/// The socket of the current connection, shared with the event loop's `BackendMonitor` so that
/// it can notice a hang-up while the guest is idle.
#[derive(Debug)]
pub struct BackendLink {
    pub socket: Mutex<Option<OwnedFd>>,
    /// Written when `socket` changes.
    pub changed: EventFd,
}

pub struct VhostUserDevice {
    path: PathBuf,
    device_type: u32,
    num_queues: usize,
    queue_max_size: u16,
    mem: GuestMemoryMmap,
    frontend: Option<Frontend>,
    /// GET_FEATURES of the backend, including VHOST_USER_F_PROTOCOL_FEATURES.
    backend_features: u64,
    /// Features the VMM itself implements on top of the backend (e.g. VIRTIO_NET_F_MAC).
    vmm_features: u64,
    /// Config space bytes the VMM provides itself, from offset 0 (e.g. the net MAC).
    vmm_config: Vec<u8>,
    pub kick: Vec<EventFd>,
    pub call: Vec<EventFd>,
    active: Option<(u64, Vec<QueueConfig>)>,
    pub link: Arc<BackendLink>,
}

impl VhostUserDevice {
    /// Connects to the backend at `path` (it must be listening already).
    pub fn new(
        path: PathBuf,
        device_type: u32,
        num_queues: usize,
        mem: GuestMemoryMmap,
        vmm_features: u64,
        vmm_config: Vec<u8>,
    ) -> Result<Self, VhostUserError> {
        let eventfd = || EventFd::new(libc::EFD_NONBLOCK).map_err(VhostUserError::EventFd);
        let kick = (0..num_queues)
            .map(|_| eventfd())
            .collect::<Result<Vec<_>, _>>()?;
        let call = (0..num_queues)
            .map(|_| eventfd())
            .collect::<Result<Vec<_>, _>>()?;
        let link = Arc::new(BackendLink {
            socket: Mutex::new(None),
            changed: eventfd()?,
        });
        let mut dev = VhostUserDevice {
            path,
            device_type,
            num_queues,
            queue_max_size: 256,
            mem,
            frontend: None,
            backend_features: 0,
            vmm_features,
            vmm_config,
            kick,
            call,
            active: None,
            link,
        };
        dev.connect()?;
        Ok(dev)
    }

    fn request<T>(&self, what: &'static str, r: vhost::Result<T>) -> Result<T, VhostUserError> {
        r.map_err(|source| VhostUserError::Request {
            path: self.path.clone(),
            what,
            source,
        })
    }

    /// Opens a connection and negotiates the protocol features.
    fn connect(&mut self) -> Result<(), VhostUserError> {
        let mut frontend =
            Frontend::connect(&self.path, self.num_queues as u64).map_err(|source| {
                VhostUserError::Connect {
                    path: self.path.clone(),
                    source,
                }
            })?;
        self.request("SET_OWNER", frontend.set_owner())?;
        let features = self.request("GET_FEATURES", frontend.get_features())?;
        if features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let offered =
                self.request("GET_PROTOCOL_FEATURES", frontend.get_protocol_features())?;
            let use_features = offered & wanted_protocol_features();
            self.request(
                "SET_PROTOCOL_FEATURES",
                frontend.set_protocol_features(use_features),
            )?;
        }
        // A reconnection (the first connection has no features yet): the backend must still
        // offer what the driver may have negotiated.
        if self.backend_features != 0 {
            let lost = self.backend_features & !features;
            if lost != 0 {
                log::warn!(
                    "vhost-user {}: reconnected backend lacks features {lost:#x}",
                    self.path.display()
                );
            }
        }
        self.backend_features = features;
        // SAFETY: dup of the connected socket's fd; the copy is owned by the OwnedFd.
        let dup = unsafe { libc::dup(frontend.as_raw_fd()) };
        if dup >= 0 {
            // SAFETY: `dup` is a fresh fd owned by nothing else.
            let fd = unsafe { OwnedFd::from_raw_fd(dup) };
            *lock(&self.link.socket) = Some(fd);
            let _ = self.link.changed.write(1);
        }
        self.frontend = Some(frontend);
        Ok(())
    }

    /// Host virtual address of `len` bytes at guest address `gpa`, if all of it is RAM.
    fn hva(&self, gpa: u64, len: usize) -> Result<u64, ActivateError> {
        let addr = GuestAddress(gpa);
        if !self.mem.check_range(addr, len) {
            return Err(ActivateError::RingOutside { gpa, len });
        }
        self.mem
            .get_host_address(addr)
            .map(|p| p as u64)
            .map_err(|e| ActivateError::Memory(e.to_string()))
    }

    fn memory_table(&self) -> Result<Vec<VhostUserMemoryRegionInfo>, ActivateError> {
        self.mem
            .iter()
            .map(|r| {
                VhostUserMemoryRegionInfo::from_guest_region(r)
                    .map_err(|e| ActivateError::Memory(e.to_string()))
            })
            .collect()
    }

    fn start_rings(
        &mut self,
        driver_features: u64,
        queues: &[QueueConfig],
    ) -> Result<(), ActivateError> {
        let protocol = self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let table = self.memory_table()?;
        let mut rings = Vec::new();
        for (i, q) in queues.iter().enumerate().filter(|(_, q)| q.ready) {
            let size = usize::from(q.size);
            if size == 0 || !size.is_power_of_two() || q.size > self.queue_max_size {
                return Err(ActivateError::QueueSize {
                    queue: i,
                    size: q.size,
                });
            }
            // Split ring sizes (virtio 1.2 section 2.7): 16-byte descriptors; avail and used
            // rings with a 4-byte header, one entry per descriptor and a 2-byte event field.
            let config = VringConfigData {
                queue_max_size: self.queue_max_size,
                queue_size: q.size,
                flags: 0,
                desc_table_addr: self.hva(q.desc, 16 * size)?,
                avail_ring_addr: self.hva(q.driver, 6 + 2 * size)?,
                used_ring_addr: self.hva(q.device, 6 + 8 * size)?,
                log_addr: None,
            };
            // Resume where the device left off: the used index in guest memory.
            let used_idx: u16 = self
                .mem
                .read_obj(GuestAddress(q.device + 2))
                .map_err(|e| ActivateError::Memory(e.to_string()))?;
            rings.push((i, q.size, config, used_idx));
        }
        let frontend = self.frontend.as_mut().ok_or(ActivateError::NotConnected)?;
        let err =
            |request: &'static str| move |source| ActivateError::VhostUser { request, source };
        let features = (driver_features & self.backend_features) | protocol;
        frontend
            .set_features(features)
            .map_err(err("SET_FEATURES"))?;
        frontend
            .set_mem_table(&table)
            .map_err(err("SET_MEM_TABLE"))?;
        for (i, size, config, used_idx) in rings {
            frontend
                .set_vring_num(i, size)
                .map_err(err("SET_VRING_NUM"))?;
            frontend
                .set_vring_addr(i, &config)
                .map_err(err("SET_VRING_ADDR"))?;
            frontend
                .set_vring_base(i, used_idx)
                .map_err(err("SET_VRING_BASE"))?;
            frontend
                .set_vring_call(i, &self.call[i])
                .map_err(err("SET_VRING_CALL"))?;
            frontend
                .set_vring_kick(i, &self.kick[i])
                .map_err(err("SET_VRING_KICK"))?;
            if protocol != 0 {
                frontend
                    .set_vring_enable(i, true)
                    .map_err(err("SET_VRING_ENABLE"))?;
            }
        }
        Ok(())
    }

    /// The backend hung up.
    pub fn disconnected(&mut self) {
        if self.frontend.take().is_some() {
            log::warn!(
                "vhost-user backend {} disconnected; the device waits for it",
                self.path.display()
            );
        }
    }

    pub fn is_connected(&self) -> bool {
        self.frontend.is_some()
    }

    /// Tries once to reconnect and, if the driver had started the device, to restart the rings.
    pub fn try_reconnect(&mut self) -> bool {
        if self.frontend.is_some() {
            return true;
        }
        if let Err(e) = self.connect() {
            log::debug!("{e}");
            return false;
        }
        if let Some((features, queues)) = self.active.clone() {
            if let Err(e) = self.start_rings(features, &queues) {
                log::error!(
                    "vhost-user {}: cannot restart the rings after reconnecting: {e}",
                    self.path.display()
                );
                self.frontend = None;
                return false;
            }
        }
        log::warn!("vhost-user backend {} reconnected", self.path.display());
        true
    }
}

impl VirtioBackend for VhostUserDevice {
    fn device_type(&self) -> u32 {
        self.device_type
    }
    fn num_queues(&self) -> usize {
        self.num_queues
    }
    fn queue_max_size(&self) -> u16 {
        self.queue_max_size
    }
    fn device_features(&self) -> u64 {
        // EVENT_IDX is not offered: the VMM raises interrupts itself (at landmarks) and, in FT
        // mode, writes the used ring for the backend, so nobody would maintain avail_event.
        let hidden = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() | VIRTIO_RING_F_EVENT_IDX;
        (self.backend_features & !hidden) | self.vmm_features
    }

    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        // The guest's config-space offset and access width (1, 2, 4 or 8 bytes; virtio 1.2
        // section 4.2.2): small, but checked rather than cast.
        let (Ok(start), Ok(off32), Ok(len32)) = (
            usize::try_from(offset),
            u32::try_from(offset),
            u32::try_from(data.len()),
        ) else {
            return;
        };
        if let Some(own) = self.vmm_config.get(start..start + data.len()) {
            data.copy_from_slice(own);
            return;
        }
        let Some(frontend) = self.frontend.as_mut() else {
            return;
        };
        let buf = vec![0u8; data.len()];
        match frontend.get_config(off32, len32, VhostUserConfigFlags::empty(), &buf) {
            Ok((_, payload)) if payload.len() == data.len() => data.copy_from_slice(&payload),
            Ok(_) => log::warn!("vhost-user {}: short GET_CONFIG reply", self.path.display()),
            Err(e) => log::warn!(
                "vhost-user {}: GET_CONFIG at {offset:#x} failed: {e}",
                self.path.display()
            ),
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if let Some(frontend) = self.frontend.as_mut() {
            let Ok(offset) = u32::try_from(offset) else {
                return;
            };
            if let Err(e) = frontend.set_config(offset, VhostUserConfigFlags::WRITABLE, data) {
                log::warn!("vhost-user {}: SET_CONFIG failed: {e}", self.path.display());
            }
        }
    }

    fn activate(
        &mut self,
        driver_features: u64,
        queues: &[QueueConfig],
    ) -> Result<(), ActivateError> {
        self.start_rings(driver_features, queues)?;
        self.active = Some((driver_features, queues.to_vec()));
        Ok(())
    }

    fn reset(&mut self) {
        if let (Some((_, queues)), Some(frontend)) = (self.active.take(), self.frontend.as_mut()) {
            for (i, _) in queues.iter().enumerate().filter(|(_, q)| q.ready) {
                // GET_VRING_BASE stops the ring (vhost-user spec, "Starting and stopping rings").
                if let Err(e) = frontend.get_vring_base(i) {
                    log::warn!("vhost-user: GET_VRING_BASE({i}) failed: {e}");
                }
            }
        }
    }

    fn as_vhost_user(&mut self) -> Option<&mut VhostUserDevice> {
        Some(self)
    }
}
