//! The landmark trace: the numbering of landmarks and what identifies the path to them.

use crate::ft::record::ExitSignature;
use crate::ft::signature::{hlt_sig, RunningHash};

/// Where the vCPU is: `landmark` exits taken, the running hash of their signatures and the
/// last one. Two copies that took the same exits have equal traces; the state transfer sends
/// it, and going live hands the backup's trace to its recorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trace {
    pub landmark: u64,
    pub hash: RunningHash,
    pub last_sig: ExitSignature,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            landmark: 0,
            hash: RunningHash::default(),
            last_sig: hlt_sig(),
        }
    }
}

impl Trace {
    /// Counts an exit: returns its landmark number (the first is 1).
    pub fn exit(&mut self, sig: ExitSignature) -> u64 {
        self.landmark += 1;
        self.hash.add(&sig);
        self.last_sig = sig;
        self.landmark
    }
}
