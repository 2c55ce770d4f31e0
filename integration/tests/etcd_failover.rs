//! Failover with the arbiter on a three-member etcd cluster in the storage namespace
//! (`vmm --arbiter etcd://...`, Debian's etcd-server): the backup goes live while a member
//! is down, waits while a majority is down and goes live as soon as one returns, never
//! before; the clients' INCR history stays clean and the flag in etcd names the survivor.

use std::time::{Duration, Instant};

use integration::cluster::{Cluster, LIVE};
use integration::workload::{wait_until, Recorder};

#[test]
fn the_backup_goes_live_with_a_member_down_and_the_flag_is_in_etcd() {
    integration::require_environment();
    let mut c = Cluster::start_etcd(None).expect("cluster");
    let t0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "etcd:counter", t0).expect("incr client");
    std::thread::sleep(Duration::from_secs(2));
    // The member the vmm asks first dies (perhaps the leader): two of three remain.
    c.etcd.as_mut().expect("etcd").kill(0);
    let killed = Instant::now();
    let _dead = c.kill_primary();
    c.wait_live(Duration::from_secs(20)).expect("backup live");
    eprintln!("live {:?} after the primary was killed", killed.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    let log = incr.finish();
    log.assert_clean("INCR through an etcd failover");
    let flags = c.etcd.as_ref().expect("etcd").flags().expect("etcdctl");
    assert!(
        flags.contains("/ftvm/arbiter/") && flags.contains("host-b"),
        "{flags}"
    );
    eprintln!("flags in etcd:\n{flags}");
}

#[test]
fn without_a_majority_the_backup_waits_and_goes_live_when_a_member_returns() {
    integration::require_environment();
    let mut c = Cluster::start_etcd(None).expect("cluster");
    let t0 = Instant::now();
    let incr = Recorder::incr(&c.lab, "etcd:quorum", t0).expect("incr client");
    std::thread::sleep(Duration::from_secs(2));
    {
        let etcd = c.etcd.as_mut().expect("etcd");
        etcd.kill(0);
        etcd.kill(1);
    }
    let _dead = c.kill_primary();
    // No quorum: the backup asks and asks, and must not go live.
    let b = c.backup_index();
    let early = wait_until(Duration::from_secs(4), || {
        c.hosts[b]
            .as_ref()
            .is_some_and(|h| h.vmm.output().contains(LIVE))
    });
    let out = c.hosts[b].as_ref().expect("backup").vmm.output();
    assert!(!early, "live without an etcd majority:\n{out}");
    assert!(
        out.contains("etcd arbiter"),
        "the backup did not say it waits for etcd:\n{out}"
    );
    let back = Instant::now();
    c.etcd
        .as_mut()
        .expect("etcd")
        .start_member(1)
        .expect("member back");
    c.wait_live(Duration::from_secs(30))
        .expect("live once a majority is back");
    eprintln!("live {:?} after the member returned", back.elapsed());
    std::thread::sleep(Duration::from_secs(1));
    incr.finish().assert_clean("INCR through a wait for etcd");
}
