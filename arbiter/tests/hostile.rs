//! Hostile clients against the real binary: idle and trickling sockets, thousands of
//! connections, garbage, oversized and truncated requests. After each, a genuine
//! test-and-set must be answered correctly.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(clippy::cast_possible_truncation)]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use arbiter::limits::{IDLE_TIMEOUT, MAX_PER_IP};
use common::{connect_from, now_ms, raise_nofile, state_dir, still_open, Arbiter, TIMEOUT};

/// Answered, and correctly: `owner` wins a fresh epoch, another owner then loses it.
fn genuine_failover_works(a: &Arbiter, vm: &str, owner: &str) {
    let t0 = Instant::now();
    let epoch = now_ms();
    let mut c = a.client();
    let d = c.test_and_set(vm, epoch, owner).expect("test_and_set");
    assert!(d.granted && d.owner == owner && d.epoch == epoch, "{d:?}");
    let d = c
        .test_and_set(vm, epoch, "the-other-side")
        .expect("test_and_set");
    assert!(!d.granted && d.owner == owner, "{d:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "slow: {:?}",
        t0.elapsed()
    );
}

/// Reads what the server sends until it closes; how long that took.
fn wait_closed(s: &mut TcpStream) -> (String, Duration) {
    let t0 = Instant::now();
    s.set_read_timeout(Some(IDLE_TIMEOUT * 3)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("not closed: {e} (got {:?})", String::from_utf8_lossy(&got)),
    }
    (String::from_utf8_lossy(&got).into_owned(), t0.elapsed())
}

#[test]
fn idle_trickling_and_truncated_connections_are_closed_after_the_idle_timeout() {
    let (_t, dir) = state_dir();
    let a = Arbiter::init(&dir);
    let idle = TcpStream::connect(&a.addr).unwrap();
    let mut truncated = TcpStream::connect(&a.addr).unwrap();
    truncated
        .write_all(br#"{"op":"test_and_set","vm":"ft-vm","ep"#)
        .unwrap();
    // One byte a second never completes a request: it does not keep the slot.
    let mut trickle = TcpStream::connect(&a.addr).unwrap();
    let trickler = {
        let mut s = trickle.try_clone().unwrap();
        thread::spawn(move || {
            for _ in 0..(IDLE_TIMEOUT.as_secs() * 2) {
                if s.write_all(b"x").is_err() {
                    return;
                }
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // A client that keeps asking stays connected past the timeout.
    let mut busy = a.client();
    let t0 = Instant::now();
    while t0.elapsed() < IDLE_TIMEOUT + Duration::from_secs(2) {
        assert!(busy.status().is_ok(), "an active connection was closed");
        thread::sleep(Duration::from_millis(500));
    }
    for (name, s) in [
        ("idle", &mut idle.try_clone().unwrap()),
        ("truncated", &mut truncated),
        ("trickle", &mut trickle),
    ] {
        let (said, _) = wait_closed(s);
        assert!(
            said.contains("no request for 5 s; closing"),
            "{name}: {said:?}"
        );
    }
    trickler.join().unwrap();
    // Closed at the timeout, not before: a fresh idle connection survives 4 s.
    let mut late = TcpStream::connect(&a.addr).unwrap();
    thread::sleep(IDLE_TIMEOUT - Duration::from_secs(1));
    assert!(still_open(&late), "closed before the idle timeout");
    let (_, waited) = wait_closed(&mut late);
    assert!(
        waited < Duration::from_secs(3),
        "closed {waited:?} after 4 s"
    );
    genuine_failover_works(&a, "ft-vm", "host-a");
}

#[test]
fn a_test_and_set_is_answered_while_2000_idle_connections_are_held() {
    const IDLE: usize = 2000;
    raise_nofile(3 * IDLE as u64 + 256);
    let (_t, dir) = state_dir();
    let mut a = Arbiter::init(&dir);
    let addr = a.socket_addr();

    // From 16 client addresses (125 each, under the per-address limit): the arbiter holds
    // them all and still answers at once.
    let t0 = Instant::now();
    let per_addr = IDLE / 16;
    assert!(per_addr < MAX_PER_IP);
    let held: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            let src = Ipv4Addr::new(127, 0, 1, 1 + (i / per_addr) as u8);
            connect_from(src, addr).expect("connect")
        })
        .collect();
    // Connections are accepted in order, so once this is answered all 2,000 were accepted.
    genuine_failover_works(&a, "vm-many", "host-a");
    let open = held.iter().filter(|s| still_open(s)).count();
    assert!(
        t0.elapsed() < IDLE_TIMEOUT,
        "too slow to tell: {:?}",
        t0.elapsed()
    );
    assert_eq!(
        open, IDLE,
        "the arbiter closed some of the held connections"
    );
    a.assert_alive();
    drop(held);

    // From one address: it keeps at most MAX_PER_IP, closing the oldest, and a genuine
    // client on that same address is still answered.
    let src = Ipv4Addr::new(127, 0, 2, 1);
    let flood: Vec<TcpStream> = (0..IDLE)
        .map(|_| connect_from(src, addr).expect("connect"))
        .collect();
    let mut genuine = connect_from(src, addr).unwrap();
    genuine.set_read_timeout(TIMEOUT).unwrap();
    let epoch = now_ms();
    genuine
        .write_all(
            format!(r#"{{"op":"test_and_set","vm":"vm-one","epoch":{epoch},"owner":"host-b"}}"#)
                .as_bytes(),
        )
        .unwrap();
    genuine.write_all(b"\n").unwrap();
    let mut reply = String::new();
    BufReader::new(&genuine).read_line(&mut reply).unwrap();
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(v["granted"], true, "{reply}");
    let open = flood.iter().filter(|s| still_open(s)).count();
    assert!(open <= MAX_PER_IP, "{open} connections of one address held");
    assert!(
        open >= MAX_PER_IP / 2,
        "only {open} held: the newest should stay"
    );
    a.assert_alive();
    genuine_failover_works(&a, "vm-after", "host-a");
}

/// A small deterministic generator of hostile bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn garbage_oversized_and_truncated_requests_are_closed_without_harm() {
    let (_t, dir) = state_dir();
    let mut a = Arbiter::init(&dir);
    let rss_before = a.rss_kib();

    // Random bytes, newlines included: error replies, or a close on an over-long line.
    for seed in 1..=8 {
        let mut s = TcpStream::connect(&a.addr).unwrap();
        let _ = s.write_all(&noise(256 * 1024, 2 * seed + 1));
        let _ = s.shutdown(Shutdown::Write);
        let (said, _) = wait_closed(&mut s);
        // Whole lines only: a reset (unread noise at the close) may cut the last one.
        let mut lines = said.split_inclusive('\n').filter(|l| l.ends_with('\n'));
        assert!(lines.all(|l| l.starts_with("{\"ok\":false")), "{said:?}");
    }
    // 64 MiB without a newline: one error line after 4 KiB, then closed; the rest is never
    // buffered.
    let mut s = TcpStream::connect(&a.addr).unwrap();
    let writer = {
        let mut s = s.try_clone().unwrap();
        // Bounded, so that an arbiter that neither reads nor closes fails the test.
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        thread::spawn(move || {
            let block = vec![b'{'; 1 << 20];
            for _ in 0..64 {
                if s.write_all(&block).is_err() {
                    return;
                }
            }
        })
    };
    let (said, _) = wait_closed(&mut s);
    assert!(said.contains("longer than 4096 bytes"), "{said:?}");
    writer.join().unwrap();
    // Truncated requests: cut off by a close, a nested bomb, a number out of range.
    for bad in [
        r#"{"op":"test_and_set","vm":"ft-vm","epoch":1,"own"#.to_string(),
        format!("{}{}", "[".repeat(2000), "]".repeat(2000)),
        r#"{"op":"test_and_set","vm":"ft-vm","epoch":1e400,"owner":"x"}"#.to_string(),
        r#"{"op":"test_and_set","vm":"ft-vm","epoch":18446744073709551616,"owner":"x"}"#
            .to_string(),
        "\u{0}\u{0}\u{0}\u{0}".to_string(),
    ] {
        let mut s = TcpStream::connect(&a.addr).unwrap();
        s.write_all(bad.as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let (said, _) = wait_closed(&mut s);
        assert!(
            said.starts_with("{\"ok\":false,\"error\":\"bad"),
            "{bad:.40}: {said:?}"
        );
    }
    // A client that asks without ever reading: its replies queue up to a bound, then it is
    // no longer read (and is closed after the idle timeout).
    let mut greedy = TcpStream::connect(&a.addr).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let ask = "{\"op\":\"status\"}\n".repeat(1000);
    let stopped = (0..4000).any(|_| greedy.write_all(ask.as_bytes()).is_err());
    assert!(
        stopped,
        "the arbiter read 64 MiB of requests whose replies nobody read"
    );
    a.assert_alive();
    genuine_failover_works(&a, "ft-vm", "host-a");
    let rss_after = a.rss_kib();
    assert!(
        rss_after < rss_before + 32 * 1024,
        "arbiter grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Nothing hostile was stored.
    let flags = a.client().status().unwrap();
    assert_eq!(flags.len(), 1, "{flags:?}");
    drop(greedy);
}
