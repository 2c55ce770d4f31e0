//! A slow host (../shared/docs/kvm-on-these-machines.md, "Fault injection"): a cgroup v1 CPU
//! quota on a process and all its threads, removed on drop (the process is moved back to the
//! root group first). Used to make the backup, and so the logging link, slower than a guest
//! dirties memory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

const ROOT: &str = "/sys/fs/cgroup/cpu";
static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct CpuLimit {
    dir: PathBuf,
    pid: u32,
}

impl CpuLimit {
    /// Limits `pid` to `percent` of one CPU.
    pub fn new(pid: u32, percent: u32) -> std::io::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(ROOT).join(format!("ftvm-test-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir)?;
        let limit = CpuLimit { dir, pid };
        std::fs::write(limit.dir.join("cpu.cfs_period_us"), "100000")?;
        std::fs::write(
            limit.dir.join("cpu.cfs_quota_us"),
            (1000 * percent).to_string(),
        )?;
        std::fs::write(limit.dir.join("cgroup.procs"), pid.to_string())?;
        Ok(limit)
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        // Back to the root group (fails harmlessly if the process is gone), then remove ours.
        let _ = std::fs::write(
            PathBuf::from(ROOT).join("cgroup.procs"),
            self.pid.to_string(),
        );
        let _ = std::fs::remove_dir(&self.dir);
    }
}
