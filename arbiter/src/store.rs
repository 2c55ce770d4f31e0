//! The durable flag store.
//!
//! Why: when primary and backup lose contact, each may believe the other is dead. Before going
//! live a side asks for the flag of (vm, epoch); exactly one side may win it, or both would
//! run the guest and diverge (split brain). So a grant must never be forgotten, also not across
//! an arbiter crash: it is on disk (fsync'd file, renamed into place, directory fsync'd) before
//! the reply leaves, and the in-memory map only changes after the disk does.
//!
//! Per vm only the highest decided epoch is kept: a request for a lower epoch is stale and
//! always refused, so older epochs need no record.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::now_ms;
use crate::protocol::{validate_owner, validate_vm, Decision, Flag};

/// All flags, in DIR.
pub const STATE_FILE: &str = "arbiter-state.json";
/// Written in full, fsync'd, then renamed over STATE_FILE.
const TEMP_FILE: &str = "arbiter-state.json.tmp";
/// Held (flock) while serving, so two arbiters cannot share one state directory.
const LOCK_FILE: &str = "arbiter.lock";
const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    flags: Vec<Flag>,
}

/// Decided flags, keyed by vm id.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    flags: BTreeMap<String, Flag>,
    /// Keeps the directory lock for the life of the store (released on exit, also on kill -9).
    _lock: File,
}

/// How `Store::open_with` treats the state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// The state file must exist (a normal start, and every restart).
    Existing,
    /// Create an empty state file; refuse if one exists (`arbiter serve --init`).
    Init,
}

impl Store {
    /// Open DIR for serving: take the directory lock and load the state file, which must
    /// exist.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, Open::Existing)
    }

    /// Take the directory lock, then load the state file or (`Open::Init`) create it.
    /// Why a missing file is an error: the file is the only record of the epochs already won;
    /// starting empty after it was deleted (or on a mistyped or unmounted path) would grant
    /// such an epoch a second time (split brain). Only an explicit `--init` starts empty.
    pub fn open_with(dir: &Path, mode: Open) -> Result<Self> {
        check_dir(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked(dir.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("lock {}", lock_path.display()), e))
            }
        }
        // Under the lock, so two `--init`s cannot both find the file missing.
        let flags = match mode {
            Open::Existing => load(dir)?.into_iter().map(|f| (f.vm.clone(), f)).collect(),
            Open::Init => BTreeMap::new(),
        };
        let store = Store {
            dir: dir.to_path_buf(),
            flags,
            _lock: lock,
        };
        if mode == Open::Init {
            let path = dir.join(STATE_FILE);
            match fs::symlink_metadata(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Ok(_) => return Err(Error::StateExists(path)),
                Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
            }
            store.persist(&store.flags)?;
        }
        Ok(store)
    }

    /// Forget the flag of `vm` (`arbiter reset`), durably; returns the flag that stood.
    /// The caller holds the directory lock (an open Store), so no arbiter is serving DIR:
    /// a serving arbiter keeps its flags in memory and would write the flag back.
    pub fn reset(&mut self, vm: &str) -> Result<Flag> {
        let Some(old) = self.flags.get(vm).cloned() else {
            return Err(Error::NoFlag(vm.to_string()));
        };
        let mut next = self.flags.clone();
        next.remove(vm);
        self.persist(&next)?;
        self.flags = next;
        Ok(old)
    }

    /// The atomic test-and-set. The caller serializes calls (the server holds a mutex), so
    /// check, durable write and update form one step.
    pub fn test_and_set(&mut self, vm: &str, epoch: u64, owner: &str) -> Result<Decision> {
        if let Some(cur) = self.flags.get(vm) {
            if epoch < cur.epoch {
                return Ok(refused(cur, true));
            }
            if epoch == cur.epoch {
                // Same owner again (e.g. the reply was lost): still the winner, nothing to write.
                return Ok(if cur.owner == owner {
                    granted(cur)
                } else {
                    refused(cur, false)
                });
            }
        }
        // Unset, or a higher epoch than any decided: the caller wins it.
        let flag = Flag {
            vm: vm.to_string(),
            epoch,
            owner: owner.to_string(),
            granted_at_unix_ms: now_ms(),
        };
        let mut next = self.flags.clone();
        next.insert(vm.to_string(), flag.clone());
        // Durable first; if this fails the grant did not happen (memory unchanged, error reply).
        self.persist(&next)?;
        self.flags = next;
        Ok(granted(&flag))
    }

    /// All flags, ordered by vm id.
    pub fn flags(&self) -> Vec<Flag> {
        self.flags.values().cloned().collect()
    }

    fn persist(&self, flags: &BTreeMap<String, Flag>) -> Result<()> {
        let state = StateFile {
            version: FORMAT_VERSION,
            flags: flags.values().cloned().collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&state)
            .map_err(|e| Error::io("encode state", io::Error::other(e)))?;
        bytes.push(b'\n');
        write_durably(&self.dir, &bytes)
            .map_err(|e| Error::io(format!("write state in {}", self.dir.display()), e))
    }
}

fn granted(f: &Flag) -> Decision {
    Decision {
        granted: true,
        owner: f.owner.clone(),
        epoch: f.epoch,
        stale: false,
    }
}

fn refused(f: &Flag, stale: bool) -> Decision {
    Decision {
        granted: false,
        owner: f.owner.clone(),
        epoch: f.epoch,
        stale,
    }
}

fn check_dir(dir: &Path) -> Result<()> {
    // Not created on demand: a mistyped path would start with no flags and could grant an
    // epoch a second time.
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::StateDirMissing(dir.to_path_buf()))
    }
}

/// Read the flags in DIR without taking the lock (for `arbiter status`; the file is only
/// ever replaced by rename, so a reader sees either the old or the new version). A missing
/// file is an error (see `Store::open_with`).
pub fn load(dir: &Path) -> Result<Vec<Flag>> {
    check_dir(dir)?;
    let path = dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::StateMissing(path)),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    let corrupt = |reason: String| Error::CorruptState {
        path: path.clone(),
        reason,
    };
    let state: StateFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if state.version != FORMAT_VERSION {
        return Err(corrupt(format!("unsupported version {}", state.version)));
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in &state.flags {
        validate_vm(&f.vm)
            .and_then(|_| validate_owner(&f.owner))
            .map_err(corrupt)?;
        if !seen.insert(f.vm.as_str()) {
            return Err(corrupt(format!("vm {} appears twice", f.vm)));
        }
    }
    Ok(state.flags)
}

/// Replace DIR/STATE_FILE with `bytes` so that after a crash at any point the file is either
/// the old or the new version, and once this returns the new one survives power loss.
fn write_durably(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(TEMP_FILE);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(STATE_FILE))?;
    // The rename is a directory entry change: it is durable only once the directory is.
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
