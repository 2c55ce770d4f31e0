//! The typed replies: `status`, `digest`, `resume`, `protect` and `snapshot` (a `pause`
//! is answered with the `status` once paused). The vmm builds these and `ftctl` and the
//! tests read them, so a field cannot be renamed on one side only.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Paused,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Not in FT mode, or an FT backup that went live and has not been told of a peer.
    Off,
    Primary,
    Backup,
}

/// The reply to `status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub state: RunState,
    /// Landmarks executed (the determinism contract's clock, docs/ARCHITECTURE.md).
    pub landmark: u64,
    pub pio_in: u64,
    pub pio_out: u64,
    pub mmio_read: u64,
    pub mmio_write: u64,
    pub hlt: u64,
    pub interrupts_injected: u64,
    /// The 8259A pair (master, slave): `irr`, `isr`, `imr`.
    pub pic: Pic,
    #[serde(flatten)]
    pub ft: FtStatus,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pic {
    pub irr: [u8; 2],
    pub isr: [u8; 2],
    pub imr: [u8; 2],
}

/// The FT part of `status`. Which fields a vmm fills depends on its role: the backup's view
/// of the log, or the primary's replication and join figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FtStatus {
    pub ft_role: Role,
    /// The pairing's epoch (the arbiter's flag), None when not in FT mode.
    pub ft_epoch: Option<u64>,
    /// "tls" (mutual TLS 1.3) or "insecure" (`--ft-insecure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_link: Option<String>,
    /// Backup: the newest landmark in the primary's entries received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_primary_landmark: Option<u64>,
    /// Records sent (primary) or received (backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_records: Option<u64>,
    /// Backup: records received and not yet applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_queued: Option<u64>,
    /// Primary: a backup has the state and acknowledges the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_protected: Option<bool>,
    /// Primary: bytes of log sent on the current link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_bytes: Option<u64>,
    /// Primary: the landmark the backup has acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_backup_landmark: Option<u64>,
    /// Primary: how long the backup took to acknowledge a record, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_lag_us_p50: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_lag_us_p99: Option<u32>,
    /// Primary: how long an output was held for the backup's acknowledgement, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_hold_us_p50: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_hold_us_p99: Option<u32>,
    /// Primary, after a join: the guest's pause, the whole transfer, its rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_join_pause_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_join_total_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_join_rounds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_join_first_round_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_join_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_join_throttle_max_pct: Option<u32>,
    /// Primary, while a join is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ft_join: Option<JoinProgress>,
}

impl FtStatus {
    /// Not in FT mode.
    pub fn off() -> Self {
        FtStatus {
            ft_role: Role::Off,
            ft_epoch: None,
            ft_link: None,
            ft_primary_landmark: None,
            ft_records: None,
            ft_queued: None,
            ft_protected: None,
            ft_bytes: None,
            ft_backup_landmark: None,
            ft_lag_us_p50: None,
            ft_lag_us_p99: None,
            ft_hold_us_p50: None,
            ft_hold_us_p99: None,
            ft_join_pause_ms: None,
            ft_join_total_ms: None,
            ft_join_rounds: None,
            ft_join_first_round_ms: None,
            ft_join_bytes: None,
            ft_join_throttle_max_pct: None,
            ft_join: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinProgress {
    pub round: u32,
    pub throttle_pct: u32,
    pub remaining_bytes: u64,
    pub elapsed_ms: u64,
}

/// The reply to `digest` (paused only).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Digest {
    pub landmark: u64,
    pub rip: u64,
    /// SHA-256 of guest RAM, hex.
    pub memory: String,
    /// SHA-256 of the vCPU's registers and special registers, hex.
    pub vcpu: String,
}

/// The reply to `resume`: where the vCPU goes on from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resumed {
    pub landmark: u64,
}

/// The reply to `protect`: the address the primary's joiner looks for a backup at now.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Protecting {
    pub peer: std::net::SocketAddr,
}

/// The reply to `snapshot` (paused only): the file written, at which landmark, its size.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotWritten {
    pub landmark: u64,
    pub path: std::path::PathBuf,
    pub bytes: u64,
}
