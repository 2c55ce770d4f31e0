//! A three-member etcd cluster (Debian's etcd-server) in the storage namespace, as the
//! pair's arbiter (`vmm --arbiter etcd://...`): members on STORAGE_IP, ports 2379/2380,
//! 2381/2382 and 2383/2384, data in the lab directory. Each member is a `Proc`, so it is
//! killed by PID when the cluster is dropped, also when a test fails.

use std::path::PathBuf;
use std::time::Duration;

use crate::proc::Proc;
use crate::stack::{Lab, StackError};
use crate::topology::STORAGE_IP;

pub struct Etcd {
    pub members: Vec<Option<Proc>>,
    ns: String,
    dir: PathBuf,
}

fn client_port(i: usize) -> u16 {
    2379 + 2 * u16::try_from(i).unwrap_or(0)
}

impl Etcd {
    pub fn start(lab: &Lab) -> Result<Self, StackError> {
        let mut e = Etcd {
            members: vec![None, None, None],
            ns: lab.topo.ns("storage"),
            dir: lab.dir.path().to_path_buf(),
        };
        for i in 0..3 {
            e.start_member(i)?;
        }
        for m in e.members.iter_mut().flatten() {
            m.wait_for("ready to serve client requests", 0, Duration::from_secs(30))?;
        }
        Ok(e)
    }

    fn initial_cluster() -> String {
        (0..3)
            .map(|i| format!("m{i}=http://{STORAGE_IP}:{}", client_port(i) + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (again: on its data directory, which it then rejoins with).
    pub fn start_member(&mut self, i: usize) -> Result<(), StackError> {
        let (client, peer) = (client_port(i), client_port(i) + 1);
        let argv: Vec<String> = [
            "etcd",
            "--name",
            &format!("m{i}"),
            "--data-dir",
            &self.dir.join(format!("etcd-m{i}")).display().to_string(),
            "--listen-client-urls",
            &format!("http://{STORAGE_IP}:{client}"),
            "--advertise-client-urls",
            &format!("http://{STORAGE_IP}:{client}"),
            "--listen-peer-urls",
            &format!("http://{STORAGE_IP}:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://{STORAGE_IP}:{peer}"),
            "--initial-cluster",
            &Self::initial_cluster(),
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "ftvm-lab",
        ]
        .map(String::from)
        .to_vec();
        let proc = Proc::spawn(&format!("etcd-m{i}"), &self.dir, Some(&self.ns), &argv)?;
        self.members[i] = Some(proc);
        Ok(())
    }

    /// SIGKILL of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].take() {
            p.kill();
        }
    }

    /// The `--arbiter` value.
    pub fn url() -> String {
        let members: Vec<String> = (0..3)
            .map(|i| format!("{STORAGE_IP}:{}", client_port(i)))
            .collect();
        format!("etcd://{}", members.join(","))
    }

    /// `etcdctl get --prefix /ftvm/arbiter/` in the storage namespace: key and owner lines.
    pub fn flags(&self) -> Result<String, StackError> {
        let mut argv = crate::netns::exec_prefix(&self.ns);
        let endpoints: Vec<String> = (0..3)
            .map(|i| format!("http://{STORAGE_IP}:{}", client_port(i)))
            .collect();
        let endpoints = format!("--endpoints={}", endpoints.join(","));
        argv.extend(
            [
                "etcdctl",
                &endpoints,
                "get",
                "--prefix",
                arbiter::etcd::KEY_PREFIX,
            ]
            .map(String::from),
        );
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("ETCDCTL_API", "3")
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
