//! Accepting connections on a local socket whose server serves one peer at a time (a
//! vhost-user backend, a backend's FT control socket): new connections wait for their first
//! message *together*, on one thread, so that a peer that connects and says nothing delays
//! nobody.
//!
//! For every connection the acceptor checks the peer with `SO_PEERCRED`
//! ([`PeerCred::may_connect`]), then waits up to `first_message` for its first byte. A
//! connection that has spoken is handed over (in the order they spoke); one that stays
//! silent is closed with a log line, as is one over the `max_waiting` limit. What happens
//! after the first byte is up to the server.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use crate::local::{euid, PeerCred};

/// A connection whose peer passed the checks and has sent its first byte.
#[derive(Debug)]
pub struct Accepted {
    pub stream: UnixStream,
    pub peer: PeerCred,
}

/// What the acceptor enforces.
#[derive(Clone, Debug)]
pub struct AcceptRules {
    /// For log lines: "vhost-user", "FT control".
    pub what: &'static str,
    /// How long a new connection may stay silent.
    pub first_message: Duration,
    /// How many connections may wait at once (silent or handed over but not yet served).
    pub max_waiting: usize,
    /// A group whose processes may connect besides our user and root (`--socket-group`).
    pub group: Option<u32>,
}

struct Silent {
    stream: UnixStream,
    peer: PeerCred,
    deadline: Instant,
}

/// Starts the acceptor thread on `listener`; connections come out of the receiver.
pub fn spawn(listener: UnixListener, rules: AcceptRules) -> io::Result<Receiver<Accepted>> {
    listener.set_nonblocking(true)?;
    let (tx, rx) = mpsc::sync_channel(rules.max_waiting.max(1));
    thread::Builder::new()
        .name("accept".into())
        .spawn(move || run(&listener, &rules, &tx))?;
    Ok(rx)
}

/// Whether `stream` has a byte to read (`Some(true)`), was closed (`Some(false)`), or
/// neither yet (`None`).
fn has_spoken(stream: &UnixStream) -> Option<bool> {
    let mut b = [0u8; 1];
    // SAFETY: recv writes at most 1 byte into `b`; MSG_PEEK leaves it (and any file
    // descriptors sent with it) in the socket for the server.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        1 => Some(true),
        0 => Some(false),
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
            _ => Some(false),
        },
    }
}

fn run(listener: &UnixListener, rules: &AcceptRules, tx: &SyncSender<Accepted>) {
    let what = rules.what;
    let mut silent: Vec<Silent> = Vec::new();
    loop {
        let now = Instant::now();
        silent.retain(|s| {
            let keep = s.deadline > now;
            if !keep {
                log::warn!(
                    "{what} socket: the connection from pid {} said nothing for {:?}; closing it",
                    s.peer.pid,
                    rules.first_message
                );
            }
            keep
        });
        let timeout = silent
            .iter()
            .map(|s| s.deadline.saturating_duration_since(now))
            .min()
            .map_or(-1, |d| {
                i32::try_from(d.as_millis()).map_or(i32::MAX, |ms| ms.saturating_add(1))
            });
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(silent.iter().map(|s| s.stream.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds that lives across the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("{what} socket: poll failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
            continue;
        }
        for i in (0..silent.len()).rev() {
            if fds[i + 1].revents == 0 {
                continue;
            }
            match has_spoken(&silent[i].stream) {
                None => {}
                Some(false) => {
                    let s = silent.remove(i);
                    log::info!(
                        "{what} socket: pid {} closed its connection before saying anything",
                        s.peer.pid
                    );
                }
                Some(true) => {
                    let s = silent.remove(i);
                    let pid = s.peer.pid;
                    match tx.try_send(Accepted {
                        stream: s.stream,
                        peer: s.peer,
                    }) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => log::warn!(
                            "{what} socket: {} connections already wait to be served; closing \
                             the one from pid {pid}",
                            rules.max_waiting
                        ),
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                }
            }
        }
        if fds[0].revents != 0 {
            accept_all(listener, rules, &mut silent);
        }
    }
}

fn accept_all(listener: &UnixListener, rules: &AcceptRules, silent: &mut Vec<Silent>) {
    let what = rules.what;
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("{what} socket: accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                return;
            }
        };
        let peer = match PeerCred::of(&stream) {
            Ok(p) => p,
            Err(e) => {
                log::error!("{what} socket: cannot identify a peer ({e}); closing it");
                continue;
            }
        };
        if !peer.may_connect(rules.group) {
            log::error!(
                "{what} socket: refusing pid {} (uid {}, gid {}): only uid {} or root{} may \
                 connect",
                peer.pid,
                peer.uid,
                peer.gid,
                euid(),
                rules
                    .group
                    .map(|g| format!(" or group {g}"))
                    .unwrap_or_default()
            );
            continue;
        }
        if silent.len() >= rules.max_waiting {
            log::warn!(
                "{what} socket: {} connections already wait for their first message; closing \
                 the one from pid {}",
                silent.len(),
                peer.pid
            );
            continue;
        }
        if let Err(e) = stream.set_nonblocking(false) {
            log::error!(
                "{what} socket: {e}; closing the connection from pid {}",
                peer.pid
            );
            continue;
        }
        silent.push(Silent {
            stream,
            peer,
            deadline: Instant::now() + rules.first_message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::path::PathBuf;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn silent_connections_delay_nobody_and_are_closed() {
        let d = Dir(std::env::temp_dir().join(format!("ftc-accept-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&d.0);
        std::fs::create_dir_all(&d.0).expect("dir");
        let p = d.0.join("s");
        let rules = AcceptRules {
            what: "test",
            first_message: Duration::from_millis(600),
            max_waiting: 4,
            group: None,
        };
        let rx = spawn(crate::local::bind(&p, None).expect("bind"), rules).expect("spawn");
        // Four silent peers (the limit), then a fifth that is closed at once.
        let mut silent: Vec<UnixStream> = (0..4)
            .map(|_| UnixStream::connect(&p).expect("c"))
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let mut over = UnixStream::connect(&p).expect("connect");
        over.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert_eq!(
            over.read(&mut [0u8; 1]).expect("closed"),
            0,
            "over the limit"
        );
        // One that leaves makes room.
        drop(silent.pop());
        std::thread::sleep(Duration::from_millis(100));
        // A peer that speaks is handed over at once, whatever waits before it.
        let t0 = Instant::now();
        let mut good = UnixStream::connect(&p).expect("connect");
        good.write_all(b"x").expect("speak");
        let a = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("handed over");
        assert!(t0.elapsed() < Duration::from_millis(500), "not delayed");
        assert_eq!(a.peer.pid, std::process::id().cast_signed());
        let mut b = [0u8; 1];
        (&a.stream)
            .read_exact(&mut b)
            .expect("its byte is still there");
        assert_eq!(&b, b"x");
        // The silent ones are closed after their timeout.
        for mut s in silent {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            assert_eq!(
                s.read(&mut [0u8; 1]).expect("closed"),
                0,
                "silent one closed"
            );
        }
        assert!(rx.try_recv().is_err(), "nothing else was handed over");
    }
}
