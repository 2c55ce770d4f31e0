//! The test-and-set on a real three-member etcd cluster (Debian's etcd-server, started here
//! on loopback with its own data directories; killed by PID when the test ends, also on
//! failure): exactly one of two askers wins an epoch, a lost reply's retry recognises its
//! own win, members that die or lose quorum never produce a grant, and bad URLs and
//! unreachable clusters give clear errors.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use arbiter::etcd::{EtcdCluster, EtcdError};
use arbiter::Decision;

const TIMEOUT: Duration = Duration::from_millis(1500);

/// A port nobody listens on now, never handed out twice in this process (the tests run in
/// parallel, and a port is free again once its probe socket is closed).
fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Asks until a member answers, as the vmm does (within `within`).
fn decide(e: &EtcdCluster, vm: &str, epoch: u64, node: &str, within: Duration) -> Decision {
    let t = Instant::now();
    loop {
        match e.test_and_set(vm, epoch, node) {
            Ok(d) => return d,
            Err(err) if t.elapsed() > within => panic!("no decision in {within:?}: {err}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// One etcd process of the cluster.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// Three members on loopback; dropped: every process killed and waited for.
struct Cluster {
    members: Vec<Member>,
    initial: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        assert!(
            Command::new("etcd").arg("--version").output().is_ok(),
            "etcd is missing: install Debian's etcd-server (make deps does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                dir: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            members,
            initial,
            _dir: dir,
        };
        for i in 0..3 {
            c.start_member(i);
        }
        c.wait_healthy();
        c
    }

    fn start_member(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = std::fs::File::create(m.dir.with_extension("log")).expect("log");
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.dir)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &self.initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "ftvm-test",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        m.child = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        let eps: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect();
        format!("etcd://{}", eps.join(","))
    }

    fn client(&self) -> EtcdCluster {
        EtcdCluster::parse(&self.url(), TIMEOUT).expect("url")
    }

    /// Waits until a write goes through (a leader is elected).
    fn wait_healthy(&self) {
        let c = self.client();
        let t = Instant::now();
        loop {
            match c.test_and_set("health", 1, "probe") {
                Ok(_) => return,
                Err(e) if t.elapsed() > Duration::from_secs(30) => {
                    panic!("etcd cluster not healthy after 30 s: {e}; {}", self.logs())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(m.dir.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                format!("{}: {}", m.name, tail.join(" | "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

#[test]
fn one_winner_per_epoch_and_a_retry_recognises_its_own_win() {
    let c = Cluster::start();
    let e = c.client();
    let a = e.test_and_set("vm1", 7, "host-a").expect("ask");
    assert!(a.granted, "{a:?}");
    assert_eq!(a.owner, "host-a");
    let b = e.test_and_set("vm1", 7, "host-b").expect("ask");
    assert!(!b.granted, "{b:?}");
    assert_eq!(b.owner, "host-a");
    // The winner's retry (its first reply lost) is still a win; another epoch is free.
    assert!(e.test_and_set("vm1", 7, "host-a").expect("ask").granted);
    assert!(e.test_and_set("vm1", 8, "host-b").expect("ask").granted);
    // Another VM's flags are its own.
    assert!(e.test_and_set("vm2", 7, "host-b").expect("ask").granted);
}

#[test]
fn both_sides_asking_at_once_exactly_one_wins_100_times() {
    let c = Cluster::start();
    let url = c.url();
    for epoch in 1..=100u64 {
        let barrier = Arc::new(Barrier::new(2));
        let ask = |node: &'static str| {
            let (barrier, url) = (barrier.clone(), url.clone());
            std::thread::spawn(move || {
                let e = EtcdCluster::parse(&url, TIMEOUT).expect("url");
                barrier.wait();
                e.test_and_set("race", epoch, node).expect("ask")
            })
        };
        let (a, b) = (ask("host-a"), ask("host-b"));
        let (a, b) = (a.join().expect("a"), b.join().expect("b"));
        assert!(a.granted != b.granted, "epoch {epoch}: {a:?} {b:?}");
        assert_eq!(a.owner, b.owner, "epoch {epoch}");
    }
}

#[test]
fn without_quorum_nobody_wins_and_the_first_member_back_decides() {
    let mut c = Cluster::start();
    let e = c.client();
    // One member down (the first the client tries, perhaps the leader: then the others
    // elect a new one within about a second): the others decide.
    c.kill(0);
    let t = Instant::now();
    assert!(decide(&e, "vm", 1, "host-a", Duration::from_secs(15)).granted);
    eprintln!("decided {:?} after a member died", t.elapsed());
    // Two down: no quorum, so no answer, never a grant.
    c.kill(1);
    let t = Instant::now();
    match e.test_and_set("vm", 2, "host-a") {
        Err(EtcdError::Unreachable(why)) => eprintln!("without quorum ({:?}): {why}", t.elapsed()),
        other => panic!("a grant without quorum: {other:?}"),
    }
    // One comes back: the flag is decided. host-a's timed-out request may have been kept in
    // the survivor's log and committed now (etcd is linearizable, a timeout is "unknown"),
    // so the owner is either side, but exactly one: the owner's retry wins, the other's
    // loses. The earlier flag stands.
    c.start_member(1);
    let t = Instant::now();
    let d = decide(&e, "vm", 2, "host-b", Duration::from_secs(30));
    eprintln!("decided {:?} after the member returned: {d:?}", t.elapsed());
    let other = if d.owner == "host-a" {
        "host-b"
    } else {
        "host-a"
    };
    assert!(d.owner == "host-a" || d.owner == "host-b", "{d:?}");
    assert!(e.test_and_set("vm", 2, &d.owner).expect("ask").granted);
    let loser = e.test_and_set("vm", 2, other).expect("ask");
    assert_eq!(
        (loser.granted, loser.owner.as_str()),
        (false, d.owner.as_str())
    );
    let old = e.test_and_set("vm", 1, "host-b").expect("ask");
    assert_eq!((old.granted, old.owner.as_str()), (false, "host-a"));
}

#[test]
fn bad_urls_and_unreachable_clusters_are_clear_errors() {
    for bad in [
        "http://127.0.0.1:2379",
        "etcd://",
        "etcd://127.0.0.1",
        "etcd://127.0.0.1:0",
        "etcd://127.0.0.1:99999",
        "etcd://:2379",
        "etcd://a:1,b",
    ] {
        let err = EtcdCluster::parse(bad, TIMEOUT).expect_err(bad).to_string();
        assert!(err.contains("expected etcd://HOST:PORT"), "{bad}: {err}");
    }
    // Nobody listens on these ports.
    let url = format!("etcd://127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let e = EtcdCluster::parse(&url, TIMEOUT).expect("url");
    match e.test_and_set("vm", 1, "host-a") {
        Err(EtcdError::Unreachable(why)) => assert!(why.contains("127.0.0.1"), "{why}"),
        other => panic!("{other:?}"),
    }
}
