use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, Registry};

use crate::http::{route, Answer};
use crate::{MetricsListener, MAX_REQUEST, REQUEST_TIMEOUT};

fn served() -> (SocketAddr, IntCounter) {
    let registry = Registry::new_custom(Some("test".into()), None).expect("registry");
    let requests = IntCounter::new("requests_total", "Requests seen").expect("counter");
    registry
        .register(Box::new(requests.clone()))
        .expect("register");
    let l = MetricsListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = l.local_addr();
    l.spawn(Box::leak(Box::new(registry)), || {}, || {})
        .expect("spawn");
    (addr, requests)
}

fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    reply
}

#[test]
fn routes_only_get_and_head_of_metrics() {
    let get = |line: &str| route(format!("{line}\r\nHost: x\r\n\r\n").as_bytes());
    assert_eq!(
        get("GET /metrics HTTP/1.1"),
        Answer::Metrics { head_only: false }
    );
    assert_eq!(
        get("GET /metrics?x=1 HTTP/1.0"),
        Answer::Metrics { head_only: false }
    );
    assert_eq!(
        get("HEAD /metrics HTTP/1.1"),
        Answer::Metrics { head_only: true }
    );
    assert_eq!(
        get("POST /metrics HTTP/1.1"),
        Answer::Error("405 Method Not Allowed")
    );
    assert_eq!(get("GET / HTTP/1.1"), Answer::Error("404 Not Found"));
    assert_eq!(get("GET /metrics"), Answer::Error("400 Bad Request"));
    assert_eq!(get("\u{0}\u{1}garbage"), Answer::Error("400 Bad Request"));
}

#[test]
fn a_scrape_returns_the_current_values() {
    let (addr, requests) = served();
    requests.inc_by(41);
    let reply = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("text/plain; version=0.0.4"), "{reply}");
    assert!(reply.contains("test_requests_total 41\n"), "{reply}");
    assert!(
        reply.contains("# TYPE test_requests_total counter\n"),
        "{reply}"
    );
    requests.inc();
    let reply = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(reply.contains("test_requests_total 42\n"), "{reply}");
}

#[test]
fn hostile_clients_cost_a_bounded_delay_and_never_stop_the_endpoint() {
    let (addr, _) = served();
    // Wrong paths and methods get an error status, not the metrics.
    let reply = exchange(addr, b"GET /secret HTTP/1.1\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    // A request head longer than the bound is refused (the connection is closed).
    let long = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(MAX_REQUEST)
    );
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(long.as_bytes());
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    assert!(!String::from_utf8_lossy(&sink).contains("200 OK"));
    // A client that connects and says nothing delays the next scrape by at most the timeout.
    let _silent = TcpStream::connect(addr).expect("connect");
    let t = Instant::now();
    let reply = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(
        t.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
}
