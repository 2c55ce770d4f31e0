//! An FT cluster as a user would run it: the topology, qemu-nbd and the arbiter in `storage`,
//! a primary on one host and a backup on the other (each with its own backends), the logging
//! channel over the hosts' direct link `ft0`. Failover swaps the roles; re-protection starts
//! a new backup on the host that lost its VM. Used by the failover tests, the demo and the
//! benchmarks.

use std::time::{Duration, Instant};

use crate::proc::Proc;
use crate::stack::{Arbiter, BlockBackend, FtMode, FtOpts, Host, Lab, NbdServer, Storage, FT_PORT};
use crate::topology::ft_ip;

pub const HOSTS: [&str; 2] = ["host-a", "host-b"];

/// The vmm log line a backup prints once it has loaded the primary's state.
pub const JOINED: &str = "replaying";
/// The vmm log line a primary prints once its backup has joined (just after the backup's
/// `JOINED`: the primary resumes the guest only when the backup has acknowledged the state).
pub const PRIMARY_JOINED: &str = "ft: backup joined at landmark";
/// The vmm log line of a backup that went live.
pub const LIVE: &str = "backup is LIVE";

/// Fields drop in order: VMs and backends first, then the arbiter and the NBD server, then
/// the topology and the directory with the logs.
pub struct Cluster {
    pub hosts: [Option<Host>; 2],
    /// With `start_etcd`: the three-member etcd cluster the pair asks instead of `arbiter`.
    pub etcd: Option<crate::etcd::Etcd>,
    pub arbiter: Arbiter,
    pub storage: Storage,
    /// Index in `HOSTS` of the host running the primary.
    pub primary: usize,
    pub opts: FtOpts,
    extra_cmdline: String,
    /// Bytes of the primary's output when the last backup was started: its
    /// `PRIMARY_JOINED` line for that backup comes after them.
    primary_log_at_spawn: usize,
    pub lab: Lab,
}

impl Cluster {
    /// Starts everything; with `protected` a backup joins before this returns.
    pub fn start(
        timeout_ms: Option<u64>,
        extra_cmdline: &str,
        protected: bool,
    ) -> Result<Self, crate::stack::StackError> {
        Self::start_sized(timeout_ms, extra_cmdline, protected, None)
    }

    /// Like `start`, with the logging channel in clear TCP (`--ft-insecure`): for tests of
    /// the protocol's own rules against a hostile peer, and for measuring what TLS costs.
    pub fn start_insecure(
        timeout_ms: Option<u64>,
        extra_cmdline: &str,
        protected: bool,
    ) -> Result<Self, crate::stack::StackError> {
        Self::start_opts(timeout_ms, extra_cmdline, protected, None, false)
    }

    /// A protected pair whose arbiter is a three-member etcd cluster in the storage
    /// namespace (`--arbiter etcd://...`).
    pub fn start_etcd(timeout_ms: Option<u64>) -> Result<Self, crate::stack::StackError> {
        Self::start_with(timeout_ms, "", true, None, true, true)
    }

    /// Like `start`, with `mem_mib` MiB of guest memory (None: 64).
    pub fn start_sized(
        timeout_ms: Option<u64>,
        extra_cmdline: &str,
        protected: bool,
        mem_mib: Option<u64>,
    ) -> Result<Self, crate::stack::StackError> {
        Self::start_opts(timeout_ms, extra_cmdline, protected, mem_mib, true)
    }

    fn start_opts(
        timeout_ms: Option<u64>,
        extra_cmdline: &str,
        protected: bool,
        mem_mib: Option<u64>,
        tls: bool,
    ) -> Result<Self, crate::stack::StackError> {
        Self::start_with(timeout_ms, extra_cmdline, protected, mem_mib, tls, false)
    }

    fn start_with(
        timeout_ms: Option<u64>,
        extra_cmdline: &str,
        protected: bool,
        mem_mib: Option<u64>,
        tls: bool,
        etcd: bool,
    ) -> Result<Self, crate::stack::StackError> {
        let lab = Lab::new(&HOSTS)?;
        let etcd = match etcd {
            true => Some(crate::etcd::Etcd::start(&lab)?),
            false => None,
        };
        let disk = lab.create_disk("disk.img")?;
        let storage = Storage::start(&lab, NbdServer::QemuNbd, &disk)?;
        let arbiter = Arbiter::start(&lab, tls)?;
        let arbiter_url = match etcd {
            Some(_) => crate::etcd::Etcd::url(),
            None => Arbiter::addr(),
        };
        let mut c = Cluster {
            hosts: [None, None],
            etcd,
            arbiter,
            storage,
            primary: 0,
            opts: FtOpts {
                arbiter: arbiter_url,
                timeout_ms,
                mem_mib,
                tls,
            },
            extra_cmdline: extra_cmdline.into(),
            primary_log_at_spawn: 0,
            lab,
        };
        if protected {
            c.spawn_backup()?;
        }
        let mode = FtMode::Primary {
            peer_ip: ft_ip(1),
            opts: c.opts.clone(),
        };
        c.hosts[0] = Some(Host::start_with(
            &c.lab,
            HOSTS[0],
            BlockBackend::Remote(Storage::uri()),
            mode,
            extra_cmdline,
        )?);
        if protected {
            c.wait_joined(Duration::from_secs(60))?;
        }
        Ok(c)
    }

    pub fn backup_index(&self) -> usize {
        1 - self.primary
    }

    pub fn primary_host(&mut self) -> &mut Host {
        self.hosts[self.primary]
            .as_mut()
            .expect("the cluster always has a primary")
    }

    pub fn backup_host(&mut self) -> Option<&mut Host> {
        self.hosts[1 - self.primary].as_mut()
    }

    /// Starts a backup (backends and vmm) on the host without a VM; does not wait for the join.
    pub fn spawn_backup(&mut self) -> Result<(), crate::stack::StackError> {
        self.spawn_backup_at(FT_PORT)
    }

    /// Like `spawn_backup`, listening on `port` (the primary must be told: `protect`).
    pub fn spawn_backup_at(&mut self, port: u16) -> Result<(), crate::stack::StackError> {
        let i = self.backup_index();
        assert!(self.hosts[i].is_none(), "{} already runs a VM", HOSTS[i]);
        self.primary_log_at_spawn = self.hosts[self.primary]
            .as_ref()
            .map_or(0, |p| p.vmm.output().len());
        let mode = FtMode::Backup {
            own_ip: ft_ip(i),
            port,
            peer_ip: ft_ip(1 - i),
            opts: self.opts.clone(),
        };
        self.hosts[i] = Some(Host::start_with(
            &self.lab,
            HOSTS[i],
            BlockBackend::Remote(Storage::uri()),
            mode,
            &self.extra_cmdline,
        )?);
        Ok(())
    }

    /// The control socket's `protect`: tells the primary that its backup listens on `port`
    /// of the backup host's logging-link address.
    pub fn protect(&mut self, port: u16) -> Result<(), crate::stack::StackError> {
        let peer = format!("{}:{port}", ft_ip(self.backup_index()));
        let addr = peer
            .parse()
            .map_err(|e| crate::stack::StackError::Other(format!("protect {peer}: {e}")))?;
        self.primary_host()
            .api()?
            .protect(addr)
            .map_err(|e| crate::stack::StackError::Other(format!("protect {peer}: {e}")))?;
        Ok(())
    }

    /// Waits until the backup has loaded the primary's state and the primary has said that
    /// it joined (both lines: tests read the primary's).
    pub fn wait_joined(&mut self, timeout: Duration) -> Result<(), crate::stack::StackError> {
        let start = Instant::now();
        let Some(b) = self.backup_host() else {
            return Err(crate::stack::StackError::Other(
                "no backup to wait for".into(),
            ));
        };
        b.vmm.wait_for(JOINED, 0, timeout)?;
        let from = self.primary_log_at_spawn;
        let left = timeout.saturating_sub(start.elapsed());
        // Also fails at once if the primary exited meanwhile.
        Ok(self
            .primary_host()
            .vmm
            .wait_for(PRIMARY_JOINED, from, left)?)
    }

    /// Re-protection: a new backup on the free host, joined. Returns the time from start to
    /// joined.
    pub fn reprotect(&mut self) -> Result<Duration, crate::stack::StackError> {
        let start = Instant::now();
        self.spawn_backup()?;
        self.wait_joined(Duration::from_secs(60))?;
        Ok(start.elapsed())
    }

    /// Kills (SIGKILL) the primary's vmm and both its backends: its host is gone.
    pub fn kill_primary(&mut self) -> Host {
        let mut host = self.hosts[self.primary]
            .take()
            .expect("the cluster always has a primary");
        kill_all(&mut [&mut host.vmm, &mut host.net, &mut host.blk]);
        host
    }

    /// The primary's host loses power: its network goes silent first (no FIN or RST leaves
    /// it, unlike a killed process on a live host), then its processes die. The backup can
    /// only notice by the heartbeat timeout. `power_on` brings the links back.
    pub fn power_off_primary(&mut self) -> Result<Host, crate::stack::StackError> {
        self.cut_links(self.primary)?;
        Ok(self.kill_primary())
    }

    /// The same for the backup's host.
    pub fn power_off_backup(&mut self) -> Result<Option<Host>, crate::stack::StackError> {
        self.cut_links(self.backup_index())?;
        Ok(self.kill_backup())
    }

    fn cut_links(&self, i: usize) -> Result<(), crate::stack::StackError> {
        self.lab.topo.set_link(HOSTS[i], false)?;
        self.lab.topo.set_ft_link(HOSTS[i], false)?;
        Ok(())
    }

    /// Restores the links of host `i` after a power-off.
    pub fn power_on(&self, i: usize) -> Result<(), crate::stack::StackError> {
        self.lab.topo.set_link(HOSTS[i], true)?;
        self.lab.topo.set_ft_link(HOSTS[i], true)?;
        Ok(())
    }

    /// Kills (SIGKILL) the backup's vmm and backends.
    pub fn kill_backup(&mut self) -> Option<Host> {
        let i = self.backup_index();
        let mut host = self.hosts[i].take()?;
        kill_all(&mut [&mut host.vmm, &mut host.net, &mut host.blk]);
        Some(host)
    }

    /// Waits until the backup says it is live, then makes it the primary.
    pub fn wait_live(&mut self, timeout: Duration) -> Result<(), crate::stack::StackError> {
        let i = self.backup_index();
        let Some(b) = self.hosts[i].as_mut() else {
            return Err(crate::stack::StackError::Other(
                "no backup to take over".into(),
            ));
        };
        b.vmm.wait_for(LIVE, 0, timeout)?;
        self.primary = i;
        Ok(())
    }

    /// Pauses primary and backup at the same landmark and asserts that all guest memory and
    /// the vCPU state are the same (panics otherwise: for tests).
    pub fn assert_replica(&mut self) {
        let [Some(a), Some(b)] = &self.hosts else {
            panic!("both hosts must run a VM");
        };
        let (primary, backup) = if self.primary == 0 { (a, b) } else { (b, a) };
        assert_identical(primary, backup);
    }

    /// Cuts or restores the logging link (both hosts stay on the client network).
    pub fn set_ft_link(&self, up: bool) -> Result<(), crate::stack::StackError> {
        Ok(self.lab.topo.set_ft_link(HOSTS[0], up)?)
    }
}

fn kill_all(procs: &mut [&mut Proc]) {
    // All at once, like a host losing power; each by its PID.
    for p in procs.iter() {
        if let Some(pid) = p.pid() {
            // SAFETY: kill(2) on the PID of a child this process started and has not reaped.
            unsafe { libc::kill(pid.cast_signed(), libc::SIGKILL) };
        }
    }
    for p in procs.iter_mut() {
        p.kill();
    }
}

/// Pauses both VMs at the same landmark and compares all guest memory and the vCPU state.
pub fn assert_identical(primary: &Host, backup: &Host) {
    let mut pa = primary.api().expect("primary api");
    let mut ba = backup.api().expect("backup api");
    let now = pa.status().expect("status").landmark;
    let target = now + 3000;
    let mut ba2 = backup.api().expect("backup api");
    let backup_paused = std::thread::spawn(move || ba2.pause(Some(target)));
    let p = pa.pause(Some(target));
    let b = backup_paused.join().expect("pause thread");
    let paused = |s: &std::io::Result<vmm_api::Status>| {
        s.as_ref()
            .is_ok_and(|s| s.state == vmm_api::RunState::Paused && s.landmark == target)
    };
    if !paused(&p) || !paused(&b) {
        // Where each side is (a backup's status tells what it received and has queued),
        // and whether the backup moves at all: a second status a second later.
        let ps = pa.status();
        let bs = ba.status();
        std::thread::sleep(Duration::from_secs(1));
        let later = ba.status();
        panic!(
            "no pause at landmark {target}: primary {p:?} (status {ps:?}), backup {b:?} \
             (status {bs:?}; a second later {later:?})"
        );
    }
    let dp = pa.digest().expect("primary digest");
    let db = ba.digest().expect("backup digest");
    assert_eq!(dp.landmark, target);
    assert_eq!(db.landmark, target);
    assert_eq!(
        dp.memory, db.memory,
        "guest memory differs at landmark {target}"
    );
    assert_eq!(dp.vcpu, db.vcpu, "vCPU state differs at landmark {target}");
    pa.resume().expect("primary resume");
    ba.resume().expect("backup resume");
}
