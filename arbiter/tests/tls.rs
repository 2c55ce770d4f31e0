//! The arbiter over mutual TLS (`serve --tls-dir`): a node may test-and-set only under a
//! name its certificate carries, and whoever is not a client of the CA, or speaks clear
//! TCP, or sends garbage inside the session, is closed without harm to the others.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arbiter::client::{Client, ClientError};
use common::{now_ms, state_dir, Arbiter, TIMEOUT};
use ft_tls::ca::ThrowawayCa;
use ft_tls::{PeerName, TlsDir};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The arbiter's directory (a server certificate for 127.0.0.1) and two nodes' directories
/// from one CA, and a node from another CA.
struct Certs {
    arbiter: PathBuf,
    host_a: TlsDir,
    host_b: TlsDir,
    rogue: TlsDir,
}

fn certs(dir: &Path) -> Certs {
    let ca = ThrowawayCa::new("arbiter test CA").expect("ca");
    let other = ThrowawayCa::new("another CA").expect("ca");
    let node = |ca: &ThrowawayCa, name: &str| {
        let d = dir.join(name);
        ca.write_node(&d, name, &[]).expect("node");
        TlsDir::load(&d).expect("load")
    };
    ca.write_node(&dir.join("arbiter"), "arbiter", &[LO])
        .expect("arbiter certificates");
    Certs {
        arbiter: dir.join("arbiter"),
        host_a: node(&ca, "host-a"),
        host_b: node(&ca, "host-b"),
        rogue: node(&other, "host-a"),
    }
}

fn tls_client(a: &Arbiter, dir: &TlsDir) -> Result<Client, ClientError> {
    Client::connect_tls(&a.addr, TIMEOUT, dir, &PeerName::ip(LO))
}

/// Reads until the server closes: what it said, or an error (a reset).
fn read_to_close(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).map(|_| out)
}

#[test]
fn a_node_may_claim_only_its_own_name() {
    let (t, state) = state_dir();
    let c = certs(t.path());
    let mut a = Arbiter::init_tls(&state, &c.arbiter);
    let epoch = now_ms();

    // host-a, in host-b's name: refused, and nothing is stored.
    let mut as_a = tls_client(&a, &c.host_a).expect("host-a connects");
    match as_a.test_and_set("ft-vm", epoch, "host-b") {
        Err(ClientError::Refused(why)) => {
            assert!(why.contains("not a name in your certificate"), "{why}")
        }
        other => panic!("a claim in another's name: {other:?}"),
    }
    assert!(as_a.status().expect("status").is_empty());
    // The same connection goes on: its own name wins.
    let d = as_a
        .test_and_set("ft-vm", epoch, "host-a")
        .expect("own name");
    assert!(d.granted, "{d:?}");
    // host-b, under its own name, loses the decided epoch as any second claimant does.
    let mut as_b = tls_client(&a, &c.host_b).expect("host-b connects");
    let d = as_b
        .test_and_set("ft-vm", epoch, "host-b")
        .expect("host-b asks");
    assert!(!d.granted && d.owner == "host-a", "{d:?}");
    let flags = as_b.status().expect("status");
    assert_eq!((flags.len(), flags[0].owner.as_str()), (1, "host-a"));
    assert!(
        a.log()
            .contains("owner=host-b: owner \"host-b\" is not a name in your certificate"),
        "{}",
        a.log()
    );
    a.assert_alive();
}

#[test]
fn strangers_clear_tcp_and_garbage_are_closed_without_harm() {
    let (t, state) = state_dir();
    let c = certs(t.path());
    let mut a = Arbiter::init_tls(&state, &c.arbiter);
    let claim = format!(
        "{{\"op\":\"test_and_set\",\"vm\":\"ft-vm\",\"epoch\":{},\"owner\":\"host-a\"}}\n",
        now_ms()
    );

    // A certificate from another CA, with the right name: the handshake fails.
    match tls_client(&a, &c.rogue) {
        Err(ClientError::Tls(_)) | Err(ClientError::Io(_)) => {}
        Ok(_) => panic!("a client of another CA was let in"),
        Err(e) => panic!("unexpected: {e}"),
    }
    // The node's client checks the arbiter's name too: host-b's certificate is not it.
    let wrong_name = Client::connect_tls(
        &a.addr,
        TIMEOUT,
        &c.host_a,
        &PeerName::ip([127, 0, 0, 2].into()),
    );
    assert!(wrong_name.is_err(), "the arbiter passed for 127.0.0.2");

    // Clear TCP: a test-and-set in JSON is not TLS; closed without an answer.
    let mut plain = TcpStream::connect(&a.addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    plain.write_all(claim.as_bytes()).expect("write");
    let said = read_to_close(&mut plain).unwrap_or_default();
    assert!(!said.windows(8).any(|w| w == b"granted\""), "{said:?}");

    // Inside a genuine session: an over-long line gets its error, then the close.
    let dir = &c.host_a;
    let tcp = TcpStream::connect(&a.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let session = dir
        .connect(tcp, &PeerName::ip(LO), Duration::from_secs(5))
        .expect("handshake");
    let mut s = session.into_client_stream().expect("stream");
    let long = vec![b'x'; 64 * 1024];
    let _ = s.write_all(&long);
    let _ = s.flush();
    let said = String::from_utf8_lossy(&read_to_close(&mut s).unwrap_or_default()).into_owned();
    assert!(said.contains("longer than 4096 bytes"), "{said:?}");

    // Random bytes in place of TLS records after the handshake: the session fails.
    let tcp = TcpStream::connect(&a.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut raw = tcp.try_clone().expect("clone");
    let session = dir
        .connect(tcp, &PeerName::ip(LO), Duration::from_secs(5))
        .expect("handshake");
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    raw.write_all(&noise).expect("noise");
    let mut s = session.into_client_stream().expect("stream");
    let said = read_to_close(&mut s).unwrap_or_default();
    assert!(!said.windows(8).any(|w| w == b"granted\""), "{said:?}");

    // The arbiter lived through all of it, said why it refused, and granted nothing.
    a.assert_alive();
    let mut genuine = tls_client(&a, &c.host_a).expect("host-a connects");
    assert!(
        genuine.status().expect("status").is_empty(),
        "a stranger set a flag"
    );
    let d = genuine
        .test_and_set("ft-vm", now_ms(), "host-a")
        .expect("claim");
    assert!(d.granted, "{d:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !a.log().contains("TLS handshake refused") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a.log().contains("TLS handshake refused"), "{}", a.log());
}

/// Many requests in one write: the session decrypts more than the server reads in one
/// wake-up, and more replies than it queues; every one is answered all the same (requests
/// that wait inside the TLS session are read without the socket becoming readable again).
#[test]
fn pipelined_requests_over_tls_are_all_answered() {
    let (t, state) = state_dir();
    let c = certs(t.path());
    let a = Arbiter::init_tls(&state, &c.arbiter);
    let mut first = tls_client(&a, &c.host_a).expect("connect");
    assert!(
        first
            .test_and_set("ft-vm", now_ms(), "host-a")
            .expect("claim")
            .granted
    );

    let tcp = TcpStream::connect(&a.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let session = c
        .host_a
        .connect(tcp, &PeerName::ip(LO), Duration::from_secs(5))
        .expect("handshake");
    // The relay gives a plain socket that a writer thread and this reader can share.
    let plain = session.relay("test", Box::new(|| {})).expect("relay");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    const N: usize = 6000;
    // 96 KB of requests, more than 16 reads of 4 KiB; ~600 KB of replies, more than 64 KiB.
    let requests = "{\"op\":\"status\"}\n".repeat(N);
    let mut w = plain.try_clone().expect("clone");
    let writer = std::thread::spawn(move || w.write_all(requests.as_bytes()));
    let mut reader = BufReader::new(plain);
    let mut answered = 0;
    let mut line = String::new();
    while answered < N {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                assert!(line.starts_with("{\"ok\":true,\"flags\":["), "{line:?}");
                answered += 1;
            }
            Err(e) => panic!("after {answered} of {N} replies: {e}"),
        }
    }
    assert_eq!(answered, N);
    writer.join().expect("writer").expect("requests written");
}
