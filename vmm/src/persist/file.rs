//! Snapshot files: the whole state of a paused VM at one landmark, for debugging (compare a
//! primary's and a backup's at the same landmark to find where they diverged). Written by
//! the control socket's `{"cmd":"snapshot","path":...}`, read by `SnapshotFile::load` and
//! `vmm --snapshot-info FILE`. Not (yet) a way to start a VM.
//!
//! The file is one envelope (persist::envelope, magic `FTVMSNAP`) whose payload is
//!
//! ```text
//! meta_len: u64 LE | meta: JSON, meta_len bytes | guest RAM, every region in address order
//! ```
//!
//! `meta` holds the vCPU state, the machine state (landmark, signature hash, last
//! signature, devices, clock) and the RAM layout. The RAM bytes are those the `digest`
//! request hashes, in the same order: their SHA-256 is the `memory` of its reply.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::envelope::{self, EnvelopeError, SealWriter, MAGIC_SNAPSHOT};
use super::hex;
use crate::ft::state::{MachineState, VcpuState};
use crate::memory::{for_each_chunk, RamError};

/// Largest payload a snapshot file may claim (1 TiB of RAM and more is not a VM of this VMM).
pub const MAX_SNAPSHOT: u64 = 1 << 40;
/// Largest metadata part: the vCPU and device state are a few tens of KiB.
pub const MAX_META: u64 = 16 << 20;
/// Most RAM regions a snapshot may list (this VMM makes one or two).
pub const MAX_REGIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot path {0} is not absolute")]
    Relative(PathBuf),
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot capture the state: {0}")]
    Capture(crate::ft::precopy::JoinError),
    #[error("cannot write the snapshot: {0}")]
    Write(#[from] std::io::Error),
    #[error("cannot read {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Ram(#[from] RamError),
    #[error("snapshot metadata: {0}")]
    Meta(#[from] serde_json::Error),
    #[error("snapshot is malformed: {0}")]
    Malformed(&'static str),
}

/// One RAM region: guest-physical start and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamRegion {
    pub gpa: u64,
    pub len: u64,
}

#[derive(Deserialize)]
struct Meta {
    vcpu: VcpuState,
    machine: MachineState,
    regions: Vec<RamRegion>,
}

/// `Meta` as written: the states are borrowed from the paused VM.
#[derive(Serialize)]
struct MetaOut<'a> {
    vcpu: &'a VcpuState,
    machine: &'a MachineState,
    regions: Vec<RamRegion>,
}

/// A snapshot read back and verified.
pub struct SnapshotFile {
    pub vcpu: VcpuState,
    pub machine: MachineState,
    pub regions: Vec<RamRegion>,
    /// The regions' contents, one after the other.
    pub memory: Vec<u8>,
}

/// Writes a snapshot to `path`, which must be absolute and must not exist: it is created
/// with mode 0600 (guest memory may hold secrets), never over an existing file or through a
/// symlink (O_EXCL). A failed write removes the partial file. Returns the file's size.
pub fn write(
    path: &Path,
    vcpu: &VcpuState,
    machine: &MachineState,
    mem: &GuestMemoryMmap,
) -> Result<u64, SnapshotError> {
    if !path.is_absolute() {
        return Err(SnapshotError::Relative(path.to_path_buf()));
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| SnapshotError::Create {
            path: path.to_path_buf(),
            source,
        })?;
    let result = write_to(file, vcpu, machine, mem);
    if result.is_err() {
        // The file is ours (create_new): a partial snapshot would only mislead.
        let _ = std::fs::remove_file(path);
    }
    result
}

fn write_to(
    file: File,
    vcpu: &VcpuState,
    machine: &MachineState,
    mem: &GuestMemoryMmap,
) -> Result<u64, SnapshotError> {
    let regions: Vec<RamRegion> = mem
        .iter()
        .map(|r| RamRegion {
            gpa: r.start_addr().raw_value(),
            len: r.len(),
        })
        .collect();
    let meta = serde_json::to_vec(&MetaOut {
        vcpu,
        machine,
        regions,
    })?;
    let mut w = SealWriter::new(BufWriter::with_capacity(1 << 20, file), MAGIC_SNAPSHOT)?;
    w.write(&(meta.len() as u64).to_le_bytes())?;
    w.write(&meta)?;
    for_each_chunk(mem, 1 << 20, |_, bytes| {
        w.write(bytes).map_err(SnapshotError::Write)
    })?;
    let (buffered, size) = w.finish()?;
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(size)
}

impl SnapshotFile {
    /// Reads and verifies a snapshot. The file is treated as hostile: every length and
    /// count is bounded before anything is allocated for it, and memory is only ever
    /// allocated for bytes the file really holds.
    pub fn load(path: &Path) -> Result<Self, SnapshotError> {
        let open = |source| SnapshotError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open)?;
        let mut r = std::io::BufReader::new(file);
        let payload = envelope::read(&mut r, &MAGIC_SNAPSHOT, MAX_SNAPSHOT)?;
        Self::parse(payload)
    }

    /// Splits a verified payload into its parts.
    fn parse(mut payload: Vec<u8>) -> Result<Self, SnapshotError> {
        let malformed = SnapshotError::Malformed;
        let head: [u8; 8] = payload
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or(malformed("no metadata length"))?;
        let meta_len = u64::from_le_bytes(head);
        if meta_len > MAX_META || meta_len > (payload.len() - 8) as u64 {
            return Err(malformed("metadata length out of bounds"));
        }
        // At most MAX_META (16 MiB) and inside the payload, checked above.
        let meta_end = 8 + usize::try_from(meta_len)
            .map_err(|_| malformed("metadata length out of bounds"))?;
        let meta: Meta = serde_json::from_slice(&payload[8..meta_end])?;
        if meta.regions.len() > MAX_REGIONS {
            return Err(malformed("too many RAM regions"));
        }
        let total = meta
            .regions
            .iter()
            .try_fold(0u64, |sum, r| sum.checked_add(r.len))
            .ok_or(malformed("RAM regions overflow"))?;
        if total != (payload.len() - meta_end) as u64 {
            return Err(malformed("RAM size differs from the regions listed"));
        }
        payload.drain(..meta_end);
        Ok(SnapshotFile {
            vcpu: meta.vcpu,
            machine: meta.machine,
            regions: meta.regions,
            memory: payload,
        })
    }

    /// SHA-256 of guest RAM: what `{"cmd":"digest"}` answered as `memory` at this landmark.
    pub fn ram_digest(&self) -> [u8; 32] {
        Sha256::digest(&self.memory).into()
    }

    /// What `vmm --snapshot-info` prints: enough to compare two snapshots at a glance.
    pub fn summary(&self) -> serde_json::Value {
        let m = &self.machine;
        serde_json::json!({
            "landmark": m.landmark,
            "signature_hash": format!("{:016x}", m.signature_hash),
            "last_signature": {
                "kind": m.last_sig.0, "addr": m.last_sig.1, "size": m.last_sig.2, "data": m.last_sig.3,
            },
            "clock_ns": m.legacy.clock_ns,
            "rip": self.vcpu.regs.rip,
            "pic": m.legacy.pic.summary(),
            "virtio": m.virtio.iter().map(|v| serde_json::json!({
                "status": v.status,
                "interrupt_status": v.interrupt_status,
                "queues": v.queues.len(),
            })).collect::<Vec<_>>(),
            "memory_bytes": self.memory.len(),
            "regions": self.regions,
            "memory": hex(&self.ram_digest()),
        })
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
