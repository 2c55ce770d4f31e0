//! Snapshot files without KVM: a made-up vCPU state, real device models and memfd RAM.

use std::os::unix::fs::PermissionsExt;

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::devices::legacy::LegacyDevices;
use crate::memory::{create_guest_memory, ram_digest};
use crate::persist::Persist;

fn vcpu() -> VcpuState {
    let mut v = VcpuState {
        regs: Default::default(),
        sregs: Default::default(),
        xsave: Default::default(),
        xcrs: Default::default(),
        debug_regs: Default::default(),
        mp_state: Default::default(),
        vcpu_events: Default::default(),
        msrs: vec![Default::default(); 3],
    };
    v.regs.rip = 0x10_0000;
    v
}

fn machine() -> MachineState {
    let mut devices = LegacyDevices::new(Box::new(std::io::sink()));
    devices.pic.pulse_irq(0);
    MachineState {
        landmark: 4242,
        signature_hash: 0xfeed_f00d,
        last_sig: (1, 0x3f8, 1, 0x41),
        legacy: devices.save(),
        virtio: Vec::new(),
    }
}

fn written(dir: &Path) -> (PathBuf, GuestMemoryMmap, MachineState) {
    let mem = create_guest_memory(4 << 20).expect("memory");
    mem.write_slice(b"guest data", GuestAddress(0x1234))
        .expect("write");
    let path = dir.join("vm.snap");
    let m = machine();
    let size = write(&path, &vcpu(), &m, &mem).expect("write");
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), size);
    (path, mem, m)
}

#[test]
fn a_snapshot_round_trips_and_its_ram_digest_is_the_digest_commands() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, mem, m) = written(dir.path());
    let meta = std::fs::metadata(&path).expect("meta");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let snap = SnapshotFile::load(&path).expect("load");
    assert_eq!(snap.machine.landmark, 4242);
    assert_eq!(snap.machine.signature_hash, 0xfeed_f00d);
    assert_eq!(snap.machine.legacy, m.legacy);
    assert_eq!(snap.vcpu.regs.rip, 0x10_0000);
    assert_eq!(snap.vcpu.msrs.len(), 3);
    assert_eq!(
        snap.regions,
        vec![RamRegion {
            gpa: 0,
            len: 4 << 20
        }]
    );
    assert_eq!(&snap.memory[0x1234..0x1234 + 10], b"guest data");
    assert_eq!(snap.ram_digest(), ram_digest(&mem).expect("digest"));
    let summary = snap.summary();
    assert_eq!(summary["landmark"], 4242);
    assert_eq!(summary["memory"], hex(&snap.ram_digest()));
    // The saved devices rebuild the same devices.
    let copy =
        LegacyDevices::restore(Box::new(std::io::sink()), &snap.machine.legacy).expect("restore");
    assert_eq!(copy.save().pic, snap.machine.legacy.pic);
}

#[test]
fn existing_files_symlinks_and_relative_paths_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, mem, _) = written(dir.path());
    let before = std::fs::read(&path).expect("read");
    assert!(matches!(
        write(&path, &vcpu(), &machine(), &mem),
        Err(SnapshotError::Create { .. })
    ));
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "not overwritten"
    );
    let target = dir.path().join("elsewhere");
    let link = dir.path().join("link.snap");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    assert!(matches!(
        write(&link, &vcpu(), &machine(), &mem),
        Err(SnapshotError::Create { .. })
    ));
    assert!(!target.exists(), "the symlink was not followed");
    assert!(matches!(
        write(Path::new("relative.snap"), &vcpu(), &machine(), &mem),
        Err(SnapshotError::Relative(_))
    ));
    assert!(!Path::new("relative.snap").exists());
}

#[test]
fn damaged_snapshots_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let (path, _, _) = written(dir.path());
    let good = std::fs::read(&path).expect("read");
    let load = |bytes: &[u8]| {
        let p = dir.path().join("damaged.snap");
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, bytes).expect("write");
        SnapshotFile::load(&p)
    };
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x80;
    assert!(matches!(
        load(&flipped),
        Err(SnapshotError::Envelope(EnvelopeError::Checksum { .. }))
    ));
    assert!(matches!(
        load(&good[..good.len() - 1]),
        Err(SnapshotError::Envelope(EnvelopeError::Truncated { .. }))
    ));
    let mut huge = good.clone();
    huge[12..20].copy_from_slice(&(MAX_SNAPSHOT + 1).to_le_bytes());
    assert!(matches!(
        load(&huge),
        Err(SnapshotError::Envelope(EnvelopeError::TooLong { .. }))
    ));
    // A valid envelope around a payload whose parts lie.
    let payload = &good[envelope::HEADER_LEN..];
    let mut wild_meta = payload.to_vec();
    wild_meta[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        load(&envelope::seal(&MAGIC_SNAPSHOT, &wild_meta)),
        Err(SnapshotError::Malformed(_))
    ));
    let short_ram = &payload[..payload.len() - 4096];
    assert!(matches!(
        load(&envelope::seal(&MAGIC_SNAPSHOT, short_ram)),
        Err(SnapshotError::Malformed(_))
    ));
    assert!(matches!(
        load(&envelope::seal(&MAGIC_SNAPSHOT, &[1, 2, 3])),
        Err(SnapshotError::Malformed(_))
    ));
    assert!(matches!(
        load(&envelope::seal(&envelope::MAGIC_MACHINE, payload)),
        Err(SnapshotError::Envelope(EnvelopeError::Magic { .. }))
    ));
}
