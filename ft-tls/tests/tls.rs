//! Real sockets on loopback: a handshake, the relay in both directions, and each way a
//! peer can fail to prove who it is.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ft_tls::ca::ThrowawayCa;
use ft_tls::{PeerName, Session, TlsDir, TlsError};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const T: Duration = Duration::from_secs(3);

fn node(ca: &ThrowawayCa, root: &Path, name: &str, ips: &[IpAddr]) -> TlsDir {
    let dir = root.join(name);
    ca.write_node(&dir, name, ips).expect("write node");
    TlsDir::load(&dir).expect("load")
}

fn name(n: &str) -> PeerName {
    PeerName::parse(n).expect("name")
}

/// Runs a server accepting one connection that must come from `client_name`; returns both
/// handshake results.
fn handshake(
    server: TlsDir,
    client: &TlsDir,
    expect_client: &str,
    expect_server: PeerName,
) -> (Result<Session, TlsError>, Result<Session, TlsError>) {
    let listener = TcpListener::bind((LO, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let want = name(expect_client);
    let srv = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        server.accept(tcp, &want, T)
    });
    let tcp = TcpStream::connect(addr).expect("connect");
    let c = client.connect(tcp, &expect_server, T);
    (c, srv.join().expect("server thread"))
}

/// Both sessions of a successful handshake, each behind its relay: (client's, server's).
fn plain_ends(
    c: Result<Session, TlsError>,
    s: Result<Session, TlsError>,
) -> (UnixStream, UnixStream) {
    let c = c
        .expect("client")
        .relay("c", Box::new(|| {}))
        .expect("relay");
    let s = s
        .expect("server")
        .relay("s", Box::new(|| {}))
        .expect("relay");
    (c, s)
}

#[test]
fn relay_carries_both_directions_and_eof() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = ThrowawayCa::new("test CA").expect("ca");
    let a = node(&ca, tmp.path(), "host-a", &[LO]);
    let b = node(&ca, tmp.path(), "host-b", &[]);
    let (c, s) = handshake(b, &a, "host-a", name("host-b"));
    let (mut c, mut s) = plain_ends(c, s);
    // More than the relay's buffers, so that back-pressure is exercised.
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let sent = big.clone();
    let mut c2 = c.try_clone().expect("clone");
    let w = std::thread::spawn(move || {
        c2.write_all(&sent).expect("write");
        c2.shutdown(std::net::Shutdown::Write).expect("shutdown");
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read to EOF");
    w.join().expect("writer");
    assert_eq!(got.len(), big.len());
    assert!(got == big, "bytes changed in transit");
    // The other direction still works after the half-close.
    s.write_all(b"reply").expect("reply");
    drop(s);
    let mut back = Vec::new();
    c.read_to_end(&mut back).expect("read reply");
    assert_eq!(back, b"reply");
}

#[test]
fn ip_address_names_a_peer() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = ThrowawayCa::new("test CA").expect("ca");
    let a = node(&ca, tmp.path(), "host-a", &[LO]);
    let b = node(&ca, tmp.path(), "host-b", &[LO]);
    let (c, s) = handshake(b, &a, "127.0.0.1", PeerName::ip(LO));
    c.expect("client");
    s.expect("server");
}

#[test]
fn server_with_another_name_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = ThrowawayCa::new("test CA").expect("ca");
    let a = node(&ca, tmp.path(), "host-a", &[]);
    let rogue = node(&ca, tmp.path(), "rogue", &[]);
    let (c, s) = handshake(rogue, &a, "host-a", name("host-b"));
    assert!(c.is_err(), "the client accepted a server named rogue");
    assert!(s.is_err(), "the handshake completed on the server side");
}

#[test]
fn client_with_another_name_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = ThrowawayCa::new("test CA").expect("ca");
    let b = node(&ca, tmp.path(), "host-b", &[]);
    let rogue = node(&ca, tmp.path(), "rogue", &[]);
    let (_, s) = handshake(b, &rogue, "host-a", name("host-b"));
    match s {
        Err(TlsError::WrongPeer { expected }) => assert_eq!(expected, "host-a"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("the server accepted a client named rogue"),
    }
}

#[test]
fn certificates_of_another_ca_are_refused_both_ways() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = ThrowawayCa::new("test CA").expect("ca");
    let other = ThrowawayCa::new("other CA").expect("ca");
    let a = node(&ca, &tmp.path().join("1"), "host-a", &[]);
    let b = node(&ca, &tmp.path().join("1"), "host-b", &[]);
    let fake_a = node(&other, &tmp.path().join("2"), "host-a", &[]);
    let fake_b = node(&other, &tmp.path().join("2"), "host-b", &[]);
    let (c, s) = handshake(b, &fake_a, "host-a", name("host-b"));
    assert!(c.is_err() && s.is_err(), "a client of another CA got in");
    let (c, s) = handshake(fake_b, &a, "host-a", name("host-b"));
    assert!(
        c.is_err() && s.is_err(),
        "a server of another CA was trusted"
    );
}

#[test]
fn a_silent_peer_is_dropped_within_the_timeout() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = ThrowawayCa::new("test CA").expect("ca");
    let b = node(&ca, tmp.path(), "host-b", &[]);
    let listener = TcpListener::bind((LO, 0)).expect("bind");
    let _idle = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (tcp, _) = listener.accept().expect("accept");
    let start = Instant::now();
    let r = b.accept(tcp, &name("host-a"), Duration::from_millis(300));
    assert!(matches!(r, Err(TlsError::Timeout(300))), "{:?}", r.err());
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// Two nodes of one CA, host-a (client) and host-b (server), and listeners for the server
/// and for a proxy between them (the directory lives as long as the first value).
fn proxied_pair() -> (tempfile::TempDir, TlsDir, TlsDir, TcpListener, TcpListener) {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = ThrowawayCa::new("test CA").expect("ca");
    let a = node(&ca, tmp.path(), "host-a", &[]);
    let b = node(&ca, tmp.path(), "host-b", &[]);
    let listener = TcpListener::bind((LO, 0)).expect("bind");
    let proxy = TcpListener::bind((LO, 0)).expect("bind");
    (tmp, a, b, listener, proxy)
}

#[test]
fn the_link_carries_no_plaintext() {
    let (_tmp, a, b, listener, proxy) = proxied_pair();
    let (server_addr, proxy_addr) = (listener.local_addr().unwrap(), proxy.local_addr().unwrap());
    // client -> recording proxy -> server
    let srv = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        let s = b.accept(tcp, &name("host-a"), T).expect("accept");
        let mut got = Vec::new();
        let mut plain = s.relay("s", Box::new(|| {})).expect("relay");
        plain.read_to_end(&mut got).expect("read");
        got
    });
    let rec = std::thread::spawn(move || {
        let (mut from, _) = proxy.accept().expect("accept");
        let mut to = TcpStream::connect(server_addr).expect("connect");
        let mut back = to.try_clone().expect("clone");
        let mut from2 = from.try_clone().expect("clone");
        std::thread::spawn(move || std::io::copy(&mut back, &mut from2));
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            if n == 0 {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return seen;
            }
            seen.extend_from_slice(&buf[..n]);
            to.write_all(&buf[..n]).expect("forward");
        }
    });
    let tcp = TcpStream::connect(proxy_addr).expect("connect");
    let mut c = a
        .connect(tcp, &name("host-b"), T)
        .expect("connect")
        .relay("c", Box::new(|| {}))
        .expect("relay");
    let secret = b"the-known-value-1234567890".repeat(100);
    c.write_all(&secret).expect("write");
    c.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_eq!(srv.join().expect("server"), secret);
    let seen = rec.join().expect("recorder");
    assert!(
        seen.len() > secret.len(),
        "the proxy saw {} bytes",
        seen.len()
    );
    assert!(
        !seen.windows(16).any(|w| w == &secret[..16]),
        "plaintext on the wire"
    );
}

/// The directories of resources/tls/make-ca.sh (openssl, what the docs tell an operator to
/// run) load, and two hosts made by it complete a handshake that checks both names.
#[test]
fn directories_made_with_openssl_work() {
    let tmp = tempfile::tempdir().expect("tmp");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/tls/make-ca.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(tmp.path())
        .args(["host-a:127.0.0.1", "host-b"])
        .output()
        .expect("run make-ca.sh (needs openssl: make deps installs it)");
    assert!(
        out.status.success(),
        "make-ca.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = TlsDir::load(&tmp.path().join("host-a")).expect("host-a");
    let b = TlsDir::load(&tmp.path().join("host-b")).expect("host-b");
    let (c, s) = handshake(b, &a, "127.0.0.1", name("host-b"));
    let (mut c, mut s) = plain_ends(c, s);
    c.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"ping");
}

/// How the proxy ends the client's side of the connection.
#[derive(Clone, Copy)]
enum Cut {
    /// A FIN: the peer's process exited without close_notify.
    Fin,
    /// A reset (SO_LINGER 0): the peer's process died with unread bytes in its socket.
    Reset,
}

/// The client's side of `server` ends by `cut` after 100000 bytes the server sent, with
/// the server's relay still open (so no close_notify was ever sent): what the server sent,
/// authenticated record by record, still reaches the client, then EOF.
fn data_before_a_cut_is_delivered(how: Cut) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (_tmp, a, b, listener, proxy) = proxied_pair();
    let (server_addr, proxy_addr) = (listener.local_addr().unwrap(), proxy.local_addr().unwrap());
    // client <- proxy <- server; the proxy cuts the client's side when told.
    let cut = Arc::new(AtomicBool::new(false));
    let cut2 = cut.clone();
    let fwd = std::thread::spawn(move || {
        let (mut client, _) = proxy.accept().expect("accept");
        let mut server = TcpStream::connect(server_addr).expect("connect");
        let (mut up_from, mut up_to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let cut3 = cut2.clone();
        let up = std::thread::spawn(move || {
            up_from
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let mut buf = [0u8; 16 << 10];
            while !cut3.load(Ordering::SeqCst) {
                match up_from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => up_to.write_all(&buf[..n]).expect("forward up"),
                    Err(_) => {}
                }
            }
        });
        server
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut buf = [0u8; 16 << 10];
        loop {
            match server.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => client.write_all(&buf[..n]).expect("forward"),
                Err(_) if cut2.load(Ordering::SeqCst) => break,
                Err(_) => {}
            }
        }
        up.join().expect("upstream copy");
        match how {
            Cut::Fin => client.shutdown(std::net::Shutdown::Write).expect("FIN"),
            Cut::Reset => {
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                use std::os::fd::AsRawFd;
                // SAFETY: a valid socket and a linger struct of the size given.
                let rc = unsafe {
                    libc::setsockopt(
                        client.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "SO_LINGER");
                drop(client); // the last descriptor: closing it sends RST
            }
        }
        server // kept open until the test ends: the server never closes cleanly
    });
    let srv = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        b.accept(tcp, &name("host-a"), T).expect("accept")
    });
    let tcp = TcpStream::connect(proxy_addr).expect("connect");
    let client = a.connect(tcp, &name("host-b"), T).expect("connect");
    let mut s = srv
        .join()
        .expect("server")
        .relay("s", Box::new(|| {}))
        .expect("relay");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    s.write_all(&data).expect("write");
    // Everything reaches the client's socket, then the cut, before its relay starts: the
    // relay reads the data and the cut in one go.
    std::thread::sleep(Duration::from_millis(500));
    cut.store(true, Ordering::SeqCst);
    let server_tcp = fwd.join().expect("proxy");
    let mut c = client.relay("c", Box::new(|| {})).expect("relay");
    c.set_read_timeout(Some(T)).expect("timeout");
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("EOF after the data");
    assert_eq!(got.len(), data.len(), "bytes delivered before the EOF");
    assert!(got == data, "bytes changed in transit");
    drop((s, server_tcp));
}

#[test]
fn data_before_a_tcp_eof_without_close_notify_is_delivered() {
    data_before_a_cut_is_delivered(Cut::Fin);
}

#[test]
fn data_before_a_tcp_reset_is_delivered() {
    data_before_a_cut_is_delivered(Cut::Reset);
}

fn poll_one(fd: i32, (rd, wr): (bool, bool)) {
    let mut events = 0;
    if rd {
        events |= libc::POLLIN;
    }
    if wr {
        events |= libc::POLLOUT;
    }
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 100) };
}

/// Both sides non-blocking, each on its own poll loop: a request line and its answer cross,
/// and the server sees the client's certificate.
#[test]
fn nonblocking_sessions_exchange_a_line() {
    use std::os::fd::AsRawFd;
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = ThrowawayCa::new("test CA").expect("ca");
    let a = node(&ca, tmp.path(), "host-a", &[]);
    let b = node(&ca, tmp.path(), "host-b", &[]);
    let listener = TcpListener::bind((LO, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let srv = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        let mut s = b.accept_nonblocking(tcp).expect("session");
        let mut line = Vec::new();
        let deadline = Instant::now() + T;
        while !line.ends_with(b"\n") && Instant::now() < deadline {
            poll_one(s.socket().as_raw_fd(), s.interest());
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => line.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("server read: {e}"),
            }
        }
        name("host-a")
            .check(s.peer_certificate().expect("client certificate"))
            .expect("the client is host-a");
        s.write_all(b"granted\n").expect("answer");
        while s.interest().1 {
            poll_one(s.socket().as_raw_fd(), (false, true));
            s.flush_tls().expect("flush");
        }
        line
    });
    let tcp = TcpStream::connect(addr).expect("connect");
    let mut c = a
        .connect_nonblocking(tcp, &name("host-b"))
        .expect("session");
    c.write_all(b"test-and-set\n").expect("request");
    let mut reply = Vec::new();
    let deadline = Instant::now() + T;
    while !reply.ends_with(b"\n") && Instant::now() < deadline {
        poll_one(c.socket().as_raw_fd(), c.interest());
        c.flush_tls().expect("flush");
        let mut buf = [0u8; 64];
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("client read: {e}"),
        }
    }
    assert_eq!(srv.join().expect("server"), b"test-and-set\n");
    assert_eq!(reply, b"granted\n");
}
