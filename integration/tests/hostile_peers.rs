//! Peers that are not what they claim (docs/ARCHITECTURE.md, "Join"): a waiting backup gets
//! connections that are no genuine primary. Each must leave it waiting for the next
//! connection; the genuine primary then joins it as usual.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use integration::cluster::{Cluster, HOSTS};
use integration::netns::connect_from;
use integration::topology::ft_ip;
use vmm::ft::record::{encode, Record};

const PORT: u16 = 7001;
const GAVE_UP: &str = "waiting for a primary again";

fn frames(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        encode(i as u64 + 1, r, &mut out).expect("encode");
    }
    out
}

#[test]
fn a_waiting_backup_survives_connections_that_are_not_a_primary() {
    let mut c = Cluster::start_insecure(None, "", false).expect("cluster");
    c.spawn_backup_at(PORT).expect("backup");
    let i = c.backup_index();
    let addr: SocketAddr = format!("{}:{PORT}", ft_ip(i)).parse().expect("addr");
    let from = c.lab.topo.ns(HOSTS[1 - i]);
    c.backup_host()
        .expect("backup")
        .vmm
        .wait_for("backup waiting for the primary", 0, Duration::from_secs(30))
        .expect("the backup listens");
    let mut noise = Vec::with_capacity(4096);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push(x as u8);
    }
    let hello = |vm_id: &str| Record::Hello {
        vm_id: vm_id.into(),
        epoch: 1,
        mem_size: 64 << 20,
    };
    let attempts: Vec<(&str, Vec<u8>, Duration)> = vec![
        ("connect and close", Vec::new(), Duration::ZERO),
        ("random bytes", noise, Duration::ZERO),
        (
            "an oversized length",
            b"FTLR\xff\xff\xff\xff".to_vec(),
            Duration::ZERO,
        ),
        (
            "a Hello for another VM",
            frames(&[hello("not-this-vm")]),
            Duration::ZERO,
        ),
        (
            "a transfer that stops after one chunk",
            frames(&[
                hello("ft-vm"),
                Record::StateBegin { landmark: 1 },
                Record::MemoryChunk {
                    gpa: 0x10_0000,
                    data: vec![0xcc; 4096],
                },
            ]),
            Duration::ZERO,
        ),
        ("an idle connection", Vec::new(), Duration::from_secs(1)),
    ];
    for (n, (what, bytes, hold)) in attempts.into_iter().enumerate() {
        let mut s = connect_from(&from, addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
        s.write_all(&bytes)
            .unwrap_or_else(|e| panic!("{what}: write: {e}"));
        std::thread::sleep(hold);
        drop(s);
        let b = c.backup_host().expect("backup");
        let seen = integration::workload::wait_until(Duration::from_secs(10), || {
            b.vmm.output().matches(GAVE_UP).count() > n
        });
        assert!(
            seen,
            "{what}: the backup did not give the connection up: {}",
            b.vmm.output()
        );
        assert!(
            b.vmm.try_status().is_none(),
            "{what}: the backup exited: {}",
            b.vmm.output()
        );
    }
    // The genuine primary joins it.
    c.protect(PORT).expect("protect");
    c.wait_joined(Duration::from_secs(60))
        .expect("the genuine primary joins");
    c.assert_replica();
}
