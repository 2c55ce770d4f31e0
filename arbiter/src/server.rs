//! TCP server: a thread per connection, one JSON request per line, one reply line each.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::error::{Error, Result};
use crate::limits::{check_epoch, now_ms};
use crate::protocol::{parse_request, Reply, Request, MAX_LINE};
use crate::store::Store;

/// Connections served at once; more get an error reply and are closed (bounds the threads).
pub const MAX_CONNECTIONS: usize = 256;

pub struct Server {
    listener: TcpListener,
    store: Arc<Mutex<Store>>,
    connections: Arc<AtomicUsize>,
}

impl Server {
    pub fn bind(addr: impl ToSocketAddrs, store: Store) -> Result<Self> {
        let listener = TcpListener::bind(addr).map_err(|e| Error::io("bind", e))?;
        Ok(Server {
            listener,
            store: Arc::new(Mutex::new(store)),
            connections: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("local_addr", e))
    }

    /// Accept connections forever.
    pub fn run(self) -> Result<()> {
        for conn in self.listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    // E.g. EMFILE or a connection reset before accept: keep serving.
                    log::warn!("accept: {e}");
                    continue;
                }
            };
            let guard = ConnGuard::new(&self.connections);
            if guard.count > MAX_CONNECTIONS {
                let mut s = stream;
                let _ = s.write_all(Reply::error("too many connections").to_line().as_bytes());
                continue;
            }
            let store = Arc::clone(&self.store);
            let spawned = thread::Builder::new()
                .name("arbiter-conn".into())
                .spawn(move || {
                    let _guard = guard;
                    let peer = stream
                        .peer_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    if let Err(e) = serve_connection(&store, stream) {
                        log::debug!("connection {peer}: {e}");
                    }
                });
            if let Err(e) = spawned {
                log::warn!("spawn connection thread: {e}");
            }
        }
        Ok(())
    }
}

struct ConnGuard {
    counter: Arc<AtomicUsize>,
    count: usize,
}

impl ConnGuard {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        let count = counter.fetch_add(1, Ordering::SeqCst) + 1;
        ConnGuard {
            counter: Arc::clone(counter),
            count,
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serve one connection until EOF, an I/O error or an over-long line.
pub fn serve_connection(store: &Mutex<Store>, stream: TcpStream) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        match read_line_limited(&mut reader, &mut line, MAX_LINE)? {
            LineRead::Eof => return Ok(()),
            LineRead::TooLong => {
                // Cannot resynchronise inside an unbounded line: say why, then close.
                let msg = format!("request line longer than {MAX_LINE} bytes; closing");
                writer.write_all(Reply::error(msg).to_line().as_bytes())?;
                return Ok(());
            }
            LineRead::Line => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let reply = handle_line(store, &line);
                writer.write_all(reply.to_line().as_bytes())?;
            }
        }
    }
}

/// Answer one request line. Never fails: problems become `{"ok":false,...}` replies.
pub fn handle_line(store: &Mutex<Store>, line: &[u8]) -> Reply {
    let req = match parse_request(line) {
        Ok(r) => r,
        Err(e) => return Reply::error(e),
    };
    // A poisoned lock means a handler panicked mid-request; refuse rather than guess.
    let mut store = match store.lock() {
        Ok(s) => s,
        Err(_) => return Reply::error(Error::Poisoned.to_string()),
    };
    match req {
        Request::TestAndSet { vm, epoch, owner } => {
            // Before the store: a far-future epoch, once granted, would make every genuine
            // later epoch of this vm stale (limits::EPOCH_SLACK_MS).
            if let Err(e) = check_epoch(epoch, now_ms()) {
                log::warn!("test_and_set vm={vm} epoch={epoch} owner={owner}: refused ({e})");
                return Reply::error(e);
            }
            tas_reply(&mut store, &vm, epoch, &owner)
        }
        Request::Status => Reply::status(store.flags()),
    }
}

fn tas_reply(store: &mut Store, vm: &str, epoch: u64, owner: &str) -> Reply {
    match store.test_and_set(vm, epoch, owner) {
        Ok(d) => {
            log::info!(
                "test_and_set vm={vm} epoch={epoch} owner={owner}: {} (flag: {} @ {}{})",
                if d.granted { "granted" } else { "refused" },
                d.owner,
                d.epoch,
                if d.stale { ", stale" } else { "" }
            );
            Reply::decision(d)
        }
        Err(e) => {
            // Not granted: the client must retry (it cannot go live without a grant).
            log::error!("test_and_set vm={vm} epoch={epoch} owner={owner}: {e}");
            Reply::error(format!("storage error: {e}"))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// `buf` holds a line (newline and a trailing '\r' removed); also a last unterminated line.
    Line,
    Eof,
    /// More than `max` bytes without a newline.
    TooLong,
}

/// Read one line of at most `max` bytes (without the newline) into `buf`.
pub fn read_line_limited(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = r.by_ref().take(limit).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(LineRead::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > max {
        return Ok(LineRead::TooLong);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(LineRead::Line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Open;

    #[test]
    fn line_limit() {
        let mut r = io::Cursor::new(b"abc\r\nxy\n\nlast".to_vec());
        let mut buf = Vec::new();
        let mut next = || {
            let k = read_line_limited(&mut r, &mut buf, 4).unwrap();
            (k, String::from_utf8(buf.clone()).unwrap())
        };
        assert_eq!(next(), (LineRead::Line, "abc".into()));
        assert_eq!(next(), (LineRead::Line, "xy".into()));
        assert_eq!(next(), (LineRead::Line, "".into()));
        assert_eq!(next(), (LineRead::Line, "last".into()));
        assert_eq!(next().0, LineRead::Eof);

        // Exactly max bytes is fine; max + 1 is not.
        let mut r = io::Cursor::new(b"abcd\nabcde\n".to_vec());
        assert_eq!(
            read_line_limited(&mut r, &mut buf, 4).unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"abcd");
        assert_eq!(
            read_line_limited(&mut r, &mut buf, 4).unwrap(),
            LineRead::TooLong
        );
    }

    #[test]
    fn handle_line_replies() {
        let t = tempfile::tempdir().unwrap();
        let store = Mutex::new(Store::open_with(t.path(), Open::Init).unwrap());
        let h = |l: &str| handle_line(&store, l.as_bytes()).to_line();
        assert_eq!(
            h(r#"{"op":"test_and_set","vm":"ft-vm","epoch":1,"owner":"host-a"}"#),
            "{\"ok\":true,\"granted\":true,\"owner\":\"host-a\",\"epoch\":1}\n"
        );
        assert_eq!(
            h(r#"{"op":"test_and_set","vm":"ft-vm","epoch":1,"owner":"host-b"}"#),
            "{\"ok\":true,\"granted\":false,\"owner\":\"host-a\",\"epoch\":1}\n"
        );
        assert!(h("nope").starts_with("{\"ok\":false,\"error\":\"bad JSON"));
        assert!(h(r#"{"op":"x"}"#).starts_with("{\"ok\":false,\"error\":\"bad request"));
        // An epoch far in the future is an error reply, not a grant, and is not stored.
        let far = format!(
            r#"{{"op":"test_and_set","vm":"ft-vm","epoch":{},"owner":"host-b"}}"#,
            u64::MAX
        );
        let reply = h(&far);
        assert!(
            reply.starts_with("{\"ok\":false,\"error\":\"epoch 18446744073709551615 is more than"),
            "{reply}"
        );
        let status: serde_json::Value = serde_json::from_str(&h(r#"{"op":"status"}"#)).unwrap();
        assert_eq!(status["ok"], true);
        assert_eq!(status["flags"][0]["vm"], "ft-vm");
        assert_eq!(status["flags"][0]["owner"], "host-a");
        assert_eq!(status["flags"][0]["epoch"], 1);
    }

    #[test]
    fn concurrent_test_and_set_has_one_winner() {
        let t = tempfile::tempdir().unwrap();
        let store = Arc::new(Mutex::new(Store::open_with(t.path(), Open::Init).unwrap()));
        let winners: Vec<bool> = (0..8)
            .map(|i| {
                let store = Arc::clone(&store);
                thread::spawn(move || {
                    let line = format!(
                        r#"{{"op":"test_and_set","vm":"vm","epoch":1,"owner":"host-{i}"}}"#
                    );
                    match handle_line(&store, line.as_bytes()) {
                        Reply::Decision { decision, .. } => decision.granted,
                        other => panic!("{other:?}"),
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    }
}
