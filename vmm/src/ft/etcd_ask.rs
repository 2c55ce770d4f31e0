//! Asking an etcd cluster (`--arbiter etcd://HOST:PORT[,HOST:PORT...]`) for the flag of
//! (vm, epoch): `arbiter::etcd`'s transaction, on a thread of its own (`ft-arbiter`), so
//! that neither the vCPU nor the event loop waits for the cluster. Each attempt tries the
//! members in turn; until one answers (a cluster without quorum does not) it retries every
//! `RETRY`, and this side does not go on alone meanwhile: the same rule as the built-in
//! arbiter's (ft::arbiter_ask). The decision goes to the arbitration's slot and the vCPU
//! is woken through its inbox.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbiter::etcd::EtcdCluster;

use super::failover::Verdict;
use crate::inbox::{DeviceEvent, Inbox};
use crate::sync::lock;

/// How long one member may take to answer, and the pause between rounds of the members.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const RETRY: Duration = Duration::from_millis(200);

/// Starts asking `cluster` for (`vm`, `epoch`) on behalf of `node`.
pub fn start(
    cluster: EtcdCluster,
    vm: String,
    node: String,
    epoch: u64,
    slot: Arc<Mutex<Option<Verdict>>>,
    inbox: Arc<Inbox>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ft-arbiter".into())
        .spawn(move || {
            crate::seccomp::enter(crate::seccomp::ThreadKind::Arbiter);
            let started = Instant::now();
            let verdict = loop {
                match cluster.test_and_set(&vm, epoch, &node) {
                    Ok(d) if d.granted => break Verdict::Won,
                    Ok(d) => {
                        break Verdict::Lost {
                            owner: d.owner,
                            epoch: d.epoch,
                        }
                    }
                    Err(e) => {
                        log::error!(
                            "ft: etcd arbiter: {e} ({} ms); not going on alone; retrying",
                            started.elapsed().as_millis()
                        );
                        std::thread::sleep(RETRY);
                    }
                }
            };
            *lock(&slot) = Some(verdict);
            inbox.post(DeviceEvent::FtWake);
        })?;
    Ok(())
}
