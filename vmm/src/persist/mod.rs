//! Saving and restoring the KVM-free parts of the machine, and the files and blobs that
//! carry their state.
//!
//! - `Persist` (this file): the one trait every KVM-free part saves and restores through,
//!   in the shape of Firecracker's `snapshot::Persist`. Implemented by the PIC and the PIT
//!   (`devices::legacy::{pic, pit}`), the VM clock and the legacy devices as a whole
//!   (`devices::legacy`), the UART (`devices::legacy::serial`), the virtio-mmio transport
//!   (`devices::virtio::mmio`, and `devices::virtio::slots` for all transports at once).
//!   The join's and the snapshot's `ft::state::MachineState` is the aggregate of their
//!   states; `vstate::snapshot` saves and reloads them beside the vCPU's (KVM) state.
//! - `envelope`: magic, format version, length and checksum around every saved state that
//!   leaves the process (the join's `DeviceState` blobs, snapshot files).
//! - `file`: snapshot files of a paused VM (`{"cmd":"snapshot"}` writes one, `vmm
//!   --snapshot-info FILE` and `SnapshotFile::load` read one), for debugging a divergence.

pub mod envelope;
pub mod file;

/// A part of the machine whose state can be saved and a part rebuilt from it.
///
/// `save` is a pure read (the vCPU is stopped at a landmark whenever it is called);
/// `restore` builds a new part from the state and the host resources the state does not
/// carry (`ConstructorArgs`: the console's output, a virtio device's backend). A state
/// comes from another process (a primary, a file) and is checked: `restore` refuses one
/// the part could not have produced rather than building a part that misbehaves later.
pub trait Persist: Sized {
    type State: serde::Serialize + serde::de::DeserializeOwned;
    type ConstructorArgs;
    type Error: std::error::Error;

    fn save(&self) -> Self::State;
    fn restore(args: Self::ConstructorArgs, state: &Self::State) -> Result<Self, Self::Error>;
}

/// Lower-case hex, as digests are shown to users (control socket, `--snapshot-info`).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
