//! TCP server: one thread polls every connection (poll(2), non-blocking sockets), one JSON
//! request per line, one reply line each.
//!
//! Why one polling thread and not a thread per connection: thousands of idle or hostile
//! connections then cost a few KiB each instead of a thread each, and a genuine
//! test-and-set is answered whatever they do (docs/PROTOCOL.md, "Arbiter", limits). The
//! store needs no lock: only this thread decides, so check, durable write and update are
//! one step by construction.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ft_tls::TlsDir;

use crate::conn::{Answer, Conn, State};
use crate::error::{Error, Result};
use crate::limits::{check_epoch, now_ms, IDLE_TIMEOUT, MAX_CONNECTIONS};
use crate::pool::Pool;
use crate::protocol::{parse_request, Reply, Request};
use crate::store::Store;
use crate::sys::{self, pollfd, POLLIN};
use crate::transport::Who;

/// File descriptors kept free of connections: the listener, stdio, the lock, the state
/// file being written, the directory fsync.
const RESERVED_FDS: u64 = 64;
/// Accept queue length asked for (the kernel caps it at net.core.somaxconn).
const BACKLOG: i32 = 4096;
/// Connections accepted per wake-up, so that the ones already open are served in between.
const ACCEPT_BATCH: usize = 256;

pub struct Server {
    listener: TcpListener,
    store: Store,
    max_connections: usize,
    tls: Option<TlsDir>,
}

impl Server {
    /// `tls`: mutual TLS with these certificates (`--tls-dir`), or None for clear TCP.
    pub fn bind(addr: impl ToSocketAddrs, store: Store, tls: Option<TlsDir>) -> Result<Self> {
        let listener = TcpListener::bind(addr).map_err(|e| Error::io("bind", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("listener non-blocking", e))?;
        if let Err(e) = sys::set_backlog(listener.as_raw_fd(), BACKLOG) {
            log::warn!("cannot lengthen the accept queue to {BACKLOG}: {e}");
        }
        Ok(Server {
            listener,
            store,
            max_connections: connection_limit(),
            tls,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("local_addr", e))
    }

    /// Connections kept at once (MAX_CONNECTIONS, or fewer if RLIMIT_NOFILE is lower).
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Serve forever.
    pub fn run(self) -> Result<()> {
        let Server {
            listener,
            mut store,
            max_connections,
            tls,
        } = self;
        let mut pool = Pool::new(max_connections);
        let mut fds: Vec<pollfd> = Vec::new();
        let mut buffered: Vec<bool> = Vec::new();
        let mut answer = |line: &[u8], who: &Who| handle_line(&mut store, line, who);
        loop {
            fds.clear();
            fds.push(pollfd {
                fd: listener.as_raw_fd(),
                events: POLLIN,
                revents: 0,
            });
            fds.extend(pool.conns.iter().map(|c| pollfd {
                fd: c.fd(),
                events: c.interest(),
                revents: 0,
            }));
            // Requests already decrypted are answered without waiting for the socket.
            buffered.clear();
            buffered.extend(pool.conns.iter_mut().map(Conn::has_buffered));
            let now = Instant::now();
            let timeout = match buffered.contains(&true) {
                true => Duration::ZERO,
                false => {
                    pool.next_deadline()
                        .map_or(IDLE_TIMEOUT, |d| d.saturating_duration_since(now))
                        + Duration::from_millis(1)
                }
            };
            if let Err(e) = sys::poll(&mut fds, timeout) {
                // E.g. ENOMEM: transient; the connections stay as they are.
                log::warn!("poll: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            for ((c, p), &buffered) in pool.conns.iter_mut().zip(&fds[1..]).zip(&buffered) {
                let revents = if buffered {
                    p.revents | POLLIN
                } else {
                    p.revents
                };
                if revents != 0 {
                    c.ready(revents, &mut answer);
                }
            }
            pool.expire(Instant::now());
            pool.sweep();
            if fds[0].revents != 0 {
                accept_batch(&listener, tls.as_ref(), &mut pool, &mut answer);
            }
            pool.report();
        }
    }
}

fn accept_batch(
    listener: &TcpListener,
    tls: Option<&TlsDir>,
    pool: &mut Pool,
    answer: &mut Answer,
) {
    for _ in 0..ACCEPT_BATCH {
        match listener.accept() {
            Ok((stream, peer)) => match Conn::new(stream, peer, tls) {
                Ok(mut c) => {
                    // Its request is often there already: answer it now. One that is done
                    // already (request, reply, close) is dropped here, not kept until the
                    // next wake-up.
                    c.ready(POLLIN, answer);
                    if c.state == State::Closed {
                        pool.note_refusal(&c);
                    } else {
                        pool.admit(c);
                    }
                }
                Err(e) => log::debug!("connection {peer}: {e}"),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                // Out of descriptors: the waiting client would make the listener readable
                // forever; free one by closing the longest-idle connection.
                log::warn!("accept: {e}; closing the longest-idle connection");
                pool.evict_oldest(|_| true);
                return;
            }
            // E.g. a connection reset before it was accepted: keep serving.
            Err(e) => log::debug!("accept: {e}"),
        }
    }
}

/// MAX_CONNECTIONS, after raising the soft RLIMIT_NOFILE as far as the hard limit allows,
/// and lowered to what that limit leaves.
pub fn connection_limit() -> usize {
    let want = u64::try_from(MAX_CONNECTIONS).unwrap_or(u64::MAX) + RESERVED_FDS;
    let fds = sys::raise_nofile(want).unwrap_or_else(|e| {
        log::warn!("cannot read or raise RLIMIT_NOFILE: {e}");
        1024
    });
    usize::try_from(fds.saturating_sub(RESERVED_FDS))
        .unwrap_or(MAX_CONNECTIONS)
        .clamp(1, MAX_CONNECTIONS)
}

/// Answer one request line from `who`. Never fails: problems become `{"ok":false,...}`
/// replies.
pub fn handle_line(store: &mut Store, line: &[u8], who: &Who) -> Reply {
    let req = match parse_request(line) {
        Ok(r) => r,
        Err(e) => return Reply::error(e),
    };
    match req {
        Request::TestAndSet { vm, epoch, owner } => {
            // Over TLS, only under a name the client's certificate carries: a node cannot
            // win (or take away) a flag in another's name.
            if let Err(e) = who.may_claim(&owner) {
                log::warn!("test_and_set vm={vm} epoch={epoch} owner={owner}: {e}");
                return Reply::error(e);
            }
            // Before the store: a far-future epoch, once granted, would make every genuine
            // later epoch of this vm stale (limits::EPOCH_SLACK_MS).
            if let Err(e) = check_epoch(epoch, now_ms()) {
                log::warn!("test_and_set vm={vm} epoch={epoch} owner={owner}: refused ({e})");
                return Reply::error(e);
            }
            tas_reply(store, &vm, epoch, &owner)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Open;

    #[test]
    fn handle_line_replies() {
        let t = tempfile::tempdir().unwrap();
        let mut store = Store::open_with(t.path(), Open::Init).unwrap();
        let mut h = |l: &str| handle_line(&mut store, l.as_bytes(), &Who::Anyone).to_line();
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
        // A genuine epoch (now, as the VMM's next_epoch picks it) still wins.
        let now = format!(
            r#"{{"op":"test_and_set","vm":"ft-vm","epoch":{},"owner":"host-b"}}"#,
            now_ms()
        );
        assert!(h(&now).starts_with("{\"ok\":true,\"granted\":true,\"owner\":\"host-b\""));
    }

    #[test]
    fn connection_limit_fits_the_fd_limit() {
        let n = connection_limit();
        assert!((1..=MAX_CONNECTIONS).contains(&n), "{n}");
    }
}
