//! One HTTP/1.1 exchange (RFC 9112): read the request head, answer, close. Only
//! `GET /metrics` (or `HEAD`) gets the metrics; anything else gets a short error status.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use prometheus::Registry;

use crate::{render, MAX_REQUEST, REQUEST_TIMEOUT};

/// The text exposition format's media type (`prometheus::TEXT_FORMAT`).
const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Metrics { head_only: bool },
    Error(&'static str),
}

/// Reads the request head: until the blank line that ends it, at most `MAX_REQUEST` bytes.
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the request",
            ));
        }
        // Only the new bytes (and the three before them) can complete the blank line.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("request longer than {MAX_REQUEST} bytes"),
            ));
        }
        if head[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
    }
}

/// What to answer to a request whose head is `head` (only the request line matters).
pub(crate) fn route(head: &[u8]) -> Answer {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let version_ok = parts.next().is_some_and(|v| v.starts_with(b"HTTP/1."));
    if !version_ok {
        return Answer::Error("400 Bad Request");
    }
    let path = target
        .unwrap_or_default()
        .split(|&b| b == b'?')
        .next()
        .unwrap_or_default();
    if path != b"/metrics" {
        return Answer::Error("404 Not Found");
    }
    match method {
        Some(b"GET") => Answer::Metrics { head_only: false },
        Some(b"HEAD") => Answer::Metrics { head_only: true },
        _ => Answer::Error("405 Method Not Allowed"),
    }
}

/// Serves one connection: reads its request within the deadline, answers, closes.
pub(crate) fn answer(
    mut stream: TcpStream,
    registry: &Registry,
    refresh: &dyn Fn(),
) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, content_type, body, head_only) = match route(&head) {
        Answer::Metrics { head_only } => {
            refresh();
            ("200 OK", CONTENT_TYPE, render(registry), head_only)
        }
        Answer::Error(status) => (
            status,
            "text/plain; charset=utf-8",
            format!("{status}: this endpoint serves GET /metrics\n"),
            false,
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(&body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}
