//! Mutual TLS on the logging channel (issue 13, point 1) against real VMMs: a peer without
//! a certificate of the pair's CA, or with one for another name, gets neither the guest's
//! memory (as a rogue backup) nor a hearing (as a rogue primary); the genuine pair then
//! joins, stays protected and serves while rogues keep trying.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use ft_tls::ca::ThrowawayCa;
use ft_tls::{PeerName, TlsDir};
use integration::cluster::{Cluster, HOSTS};
use integration::netns::{connect_from, in_ns};
use integration::stack::{test_ca, FT_PORT};
use integration::topology::ft_ip;
use integration::workload::{wait_until, Recorder};

const PORT: u16 = 7001;
const GAVE_UP: &str = "waiting for a primary again";

/// A node directory for a rogue: from `ca`, named `name`, with `ip` if given.
fn rogue_dir(root: &Path, ca: &ThrowawayCa, name: &str, ip: Option<&str>) -> TlsDir {
    let dir = root.join(format!("rogue-{name}-{}", ip.unwrap_or("noip")));
    let ips: Vec<_> = ip.map(|i| i.parse().expect("ip")).into_iter().collect();
    ca.write_node(&dir, name, &ips).expect("rogue certificates");
    TlsDir::load(&dir).expect("rogue dir")
}

/// The three rogues that pretend to be `host` (at `ip`): one without TLS, one with another
/// CA's certificate for that host, one with the pair's CA's certificate for another name.
fn rogues(
    root: &Path,
    other_ca: &ThrowawayCa,
    host: &str,
    ip: &str,
) -> [(String, Option<TlsDir>); 3] {
    [
        ("no TLS".into(), None),
        (
            format!("another CA's certificate for {host}"),
            Some(rogue_dir(root, other_ca, host, Some(ip))),
        ),
        (
            "the CA's certificate for another name".into(),
            Some(rogue_dir(root, test_ca(), "rogue", None)),
        ),
    ]
}

/// A rogue backup at the primary's `--peer`: accepts one connection, plays the TLS server
/// with `dir` (None: no TLS at all, it only listens), and returns how many bytes arrived.
fn rogue_backup(listener: &TcpListener, dir: Option<&TlsDir>) -> (usize, String) {
    listener.set_nonblocking(false).expect("blocking");
    let (tcp, _) = listener.accept().expect("the primary connects");
    let mut recorded = tcp.try_clone().expect("clone");
    match dir {
        None => {
            recorded
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut all = Vec::new();
            let _ = recorded.read_to_end(&mut all);
            (all.len(), "no TLS".into())
        }
        Some(d) => {
            // Whatever client it is: the rogue wants the data, not a particular peer.
            let r = d.accept(
                tcp,
                &PeerName::parse("host-a").expect("name"),
                Duration::from_secs(5),
            );
            let outcome = match r {
                Ok(s) => {
                    let mut plain = s.relay("rogue", Box::new(|| {})).expect("relay");
                    plain
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .expect("timeout");
                    let mut buf = vec![0u8; 1 << 20];
                    let n = plain.read(&mut buf).unwrap_or(0);
                    return (n, "handshake completed".into());
                }
                Err(e) => e.to_string(),
            };
            (0, outcome)
        }
    }
}

#[test]
fn rogue_backups_get_no_guest_memory() {
    let mut c = Cluster::start(None, "", false).expect("cluster");
    let tmp = tempfile::tempdir().expect("tmp");
    let other_ca = ThrowawayCa::new("another CA").expect("ca");
    let backup_ns = c.lab.topo.ns(HOSTS[1]);
    let addr: SocketAddr = format!("{}:{FT_PORT}", ft_ip(1)).parse().expect("addr");
    let listener = in_ns(&backup_ns, move || TcpListener::bind(addr))
        .expect("namespace")
        .expect("bind the rogue at the primary's --peer");
    let rogues = rogues(tmp.path(), &other_ca, "host-b", &ft_ip(1));
    for (what, dir) in &rogues {
        let (bytes, outcome) = rogue_backup(&listener, dir.as_ref());
        // A ClientHello is a few hundred bytes; the guest's memory is 64 MiB.
        assert!(
            bytes < 4096,
            "{what}: the rogue received {bytes} bytes ({outcome})"
        );
        assert_ne!(outcome, "handshake completed", "{what}");
        let p = c.primary_host();
        assert!(
            p.vmm.try_status().is_none(),
            "{what}: the primary exited: {}",
            p.vmm.output()
        );
    }
    let p = c.primary_host();
    assert!(
        p.vmm.output().contains("no guest state was sent"),
        "the primary did not say why: {}",
        p.vmm.output()
    );
    let status = p.status().expect("status");
    assert_eq!(status.ft.ft_link.as_deref(), Some("tls"));
    assert_eq!(status.ft.ft_protected, Some(false));
    // The genuine backup, once the rogue is gone.
    drop(listener);
    c.spawn_backup().expect("backup");
    c.wait_joined(Duration::from_secs(60))
        .expect("the genuine backup joins");
    c.assert_replica();
}

/// A rogue primary: connects from the primary's host to the waiting backup and plays the TLS
/// client with `dir` (None: sends a little plaintext, as a primary without TLS would).
fn rogue_primary(ns: &str, addr: SocketAddr, dir: Option<&TlsDir>) -> bool {
    let mut tcp = connect_from(ns, addr, Duration::from_secs(5)).expect("connect");
    match dir {
        None => {
            let _ = tcp.write_all(b"FTLR\x00\x00\x00\x10not a TLS hello");
            let mut buf = [0u8; 64];
            tcp.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let _ = tcp.read(&mut buf);
            false
        }
        Some(d) => {
            let want = PeerName::parse(&ft_ip(1)).expect("name");
            match d.connect(tcp, &want, Duration::from_secs(5)) {
                // The backup checks the client's name after the handshake: it must close
                // the session without a byte.
                Ok(s) => {
                    let mut plain = s.relay("rogue", Box::new(|| {})).expect("relay");
                    plain
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .expect("timeout");
                    let mut buf = [0u8; 64];
                    matches!(plain.read(&mut buf), Ok(n) if n > 0)
                }
                Err(_) => false,
            }
        }
    }
}

#[test]
fn rogue_primaries_are_not_heard_and_the_pair_serves_while_they_try() {
    let mut c = Cluster::start(None, "", false).expect("cluster");
    c.spawn_backup_at(PORT).expect("backup");
    let tmp = tempfile::tempdir().expect("tmp");
    let other_ca = ThrowawayCa::new("another CA").expect("ca");
    let from = c.lab.topo.ns(HOSTS[0]);
    let addr: SocketAddr = format!("{}:{PORT}", ft_ip(1)).parse().expect("addr");
    c.backup_host()
        .expect("backup")
        .vmm
        .wait_for("backup waiting for the primary", 0, Duration::from_secs(30))
        .expect("the backup listens");
    let rogues = rogues(tmp.path(), &other_ca, "host-a", &ft_ip(0));
    for (n, (what, dir)) in rogues.iter().enumerate() {
        let heard = rogue_primary(&from, addr, dir.as_ref());
        assert!(!heard, "{what}: the backup answered a rogue");
        let b = c.backup_host().expect("backup");
        let gave_up = wait_until(Duration::from_secs(10), || {
            b.vmm.output().matches(GAVE_UP).count() > n
        });
        assert!(
            gave_up,
            "{what}: the backup did not drop it: {}",
            b.vmm.output()
        );
        assert!(b.vmm.try_status().is_none(), "{what}: the backup exited");
    }
    c.protect(PORT).expect("protect");
    c.wait_joined(Duration::from_secs(60))
        .expect("the genuine primary joins");
    // Under load, rogues keep knocking at the backup's (now closed) port and at the
    // primary's host; the pair stays protected and every reply is right.
    let writes = Recorder::writes(&c.lab, "tls-", Instant::now()).expect("client");
    let stop = Instant::now() + Duration::from_secs(5);
    while Instant::now() < stop {
        if let Ok(mut s) = connect_from(&from, addr, Duration::from_millis(200)) {
            let _ = s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = writes.finish();
    log.assert_clean("writes while rogues knock");
    assert!(log.samples.len() > 10, "only {} replies", log.samples.len());
    let status = c.primary_host().status().expect("status");
    assert_eq!(status.ft.ft_protected, Some(true));
    c.assert_replica();
}
