//! Asking the arbiter from the event loop, without blocking it: one test-and-set exchange at
//! a time over a non-blocking socket (connect, one request line, one reply line), each given
//! `ATTEMPT_TIMEOUT`, retried every `RETRY` until the arbiter answers with a decision. An
//! error reply (an epoch ahead of its clock, its storage failing) grants nothing either: it is
//! retried like an unreachable arbiter. Neither side goes live meanwhile.
//!
//! With `--ft-tls-dir` the exchange runs in mutual TLS (the same directory's client
//! certificate; the arbiter's must name `--arbiter-name`, else the host of `--arbiter`), and
//! the arbiter grants the flag only to the name that certificate carries, so `--node` must
//! be one of them.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbiter::client::{parse_decision, test_and_set_line, ClientError};
use arbiter::protocol::MAX_LINE;
use arbiter::transport::Transport;
use event_manager::{EventOps, Events, MutEventSubscriber};
use ft_tls::{PeerName, TlsDir};
use vmm_sys_util::epoll::EventSet;

use super::failover::Verdict;
use super::link::LinkSecurity;
use crate::config::FailoverConfig;
use crate::event_loop::{Connecting, EventLoopError, Registrar, Registration, Timer};
use crate::inbox::{DeviceEvent, Inbox};
use crate::sync::lock;

/// How long one attempt may take, and the pause between attempts.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const RETRY: Duration = Duration::from_millis(200);

/// Starts asking `addr` for the flag of (`cfg.vm_id`, `epoch`); the decision goes to `slot`
/// and the vCPU is woken through `inbox`.
pub fn start(
    events: &Registrar,
    addr: String,
    cfg: &FailoverConfig,
    epoch: u64,
    slot: Arc<Mutex<Option<Verdict>>>,
    inbox: Arc<Inbox>,
) -> Result<(), EventLoopError> {
    let timer = Timer::periodic(RETRY)?;
    let (vm, node) = (cfg.vm_id.clone(), cfg.node.clone());
    let tls = match &cfg.security {
        LinkSecurity::Insecure => None,
        LinkSecurity::Tls { dir, .. } => {
            Some((dir.clone(), arbiter_name(cfg.arbiter_name.as_ref(), &addr)))
        }
    };
    events.add(move |registration| Ask {
        timer,
        tls,
        addr,
        vm,
        node,
        epoch,
        slot,
        inbox,
        exchange: None,
        attempts: 0,
        started: Instant::now(),
        registration,
        done: false,
    })
}

/// Whom the arbiter's certificate must name: `--arbiter-name`, else the host part of
/// `--arbiter` (an IP address or a DNS name, as a browser checks the host it dialled).
fn arbiter_name(configured: Option<&PeerName>, addr: &str) -> PeerName {
    if let Some(name) = configured {
        return name.clone();
    }
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // An unparsable host cannot be dialled either; the name then matches no certificate.
    PeerName::parse(host).unwrap_or_else(|_| PeerName::ip([0, 0, 0, 0].into()))
}

struct Ask {
    timer: Timer,
    /// `--ft-tls-dir` and the arbiter's name, or None for clear TCP (`--ft-insecure`).
    tls: Option<(TlsDir, PeerName)>,
    addr: String,
    vm: String,
    node: String,
    epoch: u64,
    slot: Arc<Mutex<Option<Verdict>>>,
    inbox: Arc<Inbox>,
    exchange: Option<Exchange>,
    attempts: u64,
    started: Instant,
    registration: Registration,
    done: bool,
}

/// One attempt.
struct Exchange {
    phase: Phase,
    started: Instant,
}

enum Phase {
    Connecting(Connecting),
    /// The request is sent (over TLS: handed to the session, which sends it once the
    /// handshake is over); the reply line is being read.
    Reading {
        stream: Transport,
        reply: Vec<u8>,
        /// Whether the loop watches the socket for POLLOUT too (TLS records wait).
        out: bool,
    },
}

/// What to watch a stream for: the reply, and EPOLLOUT too while TLS records wait.
fn events_for(out: bool) -> EventSet {
    if out {
        EventSet::IN | EventSet::OUT
    } else {
        EventSet::IN
    }
}

/// Watches `stream` for what it waits for now.
fn watch(ops: &mut EventOps, stream: &Transport, out: &mut bool) -> std::io::Result<()> {
    let want = stream.wants_write();
    if want != *out {
        ops.modify(Events::new_raw(stream.fd(), events_for(want)))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        *out = want;
    }
    Ok(())
}

impl Phase {
    fn fd(&self) -> i32 {
        match self {
            Phase::Connecting(c) => c.as_raw_fd(),
            Phase::Reading { stream, .. } => stream.fd(),
        }
    }
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("cannot resolve the address: {0}")]
    Resolve(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no reply within {} ms", ATTEMPT_TIMEOUT.as_millis())]
    Timeout,
    #[error(transparent)]
    Client(#[from] ClientError),
}

fn resolve(addr: &str) -> Result<SocketAddr, AttemptError> {
    // An address (what configurations use) needs no lookup; a host name is looked up on the
    // loop thread, which may block it as long as the resolver takes.
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    addr.to_socket_addrs()
        .map_err(AttemptError::Resolve)?
        .next()
        .ok_or_else(|| {
            AttemptError::Resolve(std::io::Error::new(ErrorKind::NotFound, "no address"))
        })
}

impl Ask {
    fn begin(&mut self, ops: &mut EventOps) -> Result<(), AttemptError> {
        let attempt = Connecting::start(resolve(&self.addr)?)?;
        ops.add(Events::new(&attempt, EventSet::OUT))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.exchange = Some(Exchange {
            phase: Phase::Connecting(attempt),
            started: Instant::now(),
        });
        Ok(())
    }

    /// The socket is ready: moves the exchange on. `Some` once there is a decision. On an
    /// error the exchange is still in place, for `failed` to unregister and close: a socket
    /// closed while the loop still watches it would leave its fd in the loop's table.
    fn advance(&mut self, ops: &mut EventOps) -> Result<Option<Verdict>, AttemptError> {
        let Some(exchange) = self.exchange.as_mut() else {
            return Ok(None);
        };
        match &mut exchange.phase {
            Phase::Connecting(attempt) => {
                if !attempt.is_connected()? {
                    return Ok(None);
                }
                let started = exchange.started;
                let Some(Exchange {
                    phase: Phase::Connecting(attempt),
                    ..
                }) = self.exchange.take()
                else {
                    return Ok(None);
                };
                // From here on the socket is not watched until it is added again.
                let _ = ops.remove(Events::empty(&attempt));
                let tcp = attempt.into_nonblocking_stream()?;
                let tls = self.tls.as_ref().map(|(dir, name)| (dir, name));
                let mut stream = Transport::client(tcp, tls)?;
                // A fresh connection's send buffer (or a new session's) takes one short
                // line whole.
                let request = format!("{}\n", test_and_set_line(&self.vm, self.epoch, &self.node)?);
                if stream.write(request.as_bytes())? != request.len() {
                    return Err(
                        std::io::Error::new(ErrorKind::WriteZero, "request cut short").into(),
                    );
                }
                let out = stream.wants_write();
                ops.add(Events::new_raw(stream.fd(), events_for(out)))
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                self.exchange = Some(Exchange {
                    phase: Phase::Reading {
                        stream,
                        reply: Vec::new(),
                        out,
                    },
                    started,
                });
                Ok(None)
            }
            Phase::Reading { stream, reply, out } => {
                stream.flush()?;
                let mut buf = [0u8; 1024];
                while !reply.contains(&b'\n') {
                    match stream.read(&mut buf) {
                        Ok(0) => return Err(ClientError::Closed.into()),
                        Ok(n) => reply.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            watch(ops, stream, out)?;
                            return Ok(None);
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                    if reply.len() > MAX_LINE + 1 {
                        return Err(ClientError::BadReply("reply line too long".into()).into());
                    }
                }
                let end = reply
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(reply.len());
                let d = parse_decision(&String::from_utf8_lossy(&reply[..end]))?;
                Ok(Some(match d.granted {
                    true => Verdict::Won,
                    false => Verdict::Lost {
                        owner: d.owner,
                        epoch: d.epoch,
                    },
                }))
            }
        }
    }

    /// Unregisters and closes the attempt under way.
    fn close(&mut self, ops: &mut EventOps) {
        if let Some(x) = self.exchange.take() {
            let _ = ops.remove(Events::empty_raw(x.phase.fd()));
        }
    }

    /// Ends the attempt under way (its socket closes) and logs why, now and then.
    fn failed(&mut self, ops: &mut EventOps, e: &AttemptError) {
        self.close(ops);
        if self.attempts.is_multiple_of(10) {
            let what = match e {
                AttemptError::Client(ClientError::Refused(_)) => "answers with an error",
                // A certificate from another CA, or one without the arbiter's name.
                AttemptError::Io(e) if e.kind() == ErrorKind::InvalidData => {
                    "fails the TLS handshake"
                }
                _ => "unreachable",
            };
            log::error!(
                "ft: arbiter {} {what} for {} ms ({e}); not going on alone; retrying",
                self.addr,
                self.started.elapsed().as_millis()
            );
        }
        self.attempts += 1;
    }

    fn decided(&mut self, ops: &mut EventOps, verdict: Verdict) {
        self.close(ops);
        *lock(&self.slot) = Some(verdict);
        self.inbox.post(DeviceEvent::FtWake);
        self.done = true;
        self.registration.end();
    }
}

impl MutEventSubscriber for Ask {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if self.done {
            return;
        }
        let result = if events.fd() == self.timer.as_raw_fd() {
            if self.timer.expirations() == 0 {
                return;
            }
            match &self.exchange {
                Some(x) if x.started.elapsed() > ATTEMPT_TIMEOUT => Err(AttemptError::Timeout),
                Some(_) => Ok(None),
                None => self.begin(ops).map(|()| None),
            }
        } else {
            self.advance(ops)
        };
        match result {
            Ok(Some(verdict)) => self.decided(ops, verdict),
            Ok(None) => {}
            Err(e) => self.failed(ops, &e),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            // Without the timer nobody asks: this side must not go on alone.
            log::error!("ft: cannot ask the arbiter: {e}");
            let epoch = self.epoch;
            return self.decided(
                ops,
                Verdict::Lost {
                    owner: "(cannot ask the arbiter)".into(),
                    epoch,
                },
            );
        }
        // The first attempt at once, not one retry period later.
        if let Err(e) = self.begin(ops) {
            self.failed(ops, &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arbiter_name_defaults_to_the_host_dialled() {
        let ip = |s: &str| PeerName::ip(s.parse().unwrap());
        assert_eq!(arbiter_name(None, "10.77.0.3:7700"), ip("10.77.0.3"));
        assert_eq!(arbiter_name(None, "[::1]:7700"), ip("::1"));
        let dns = PeerName::parse("arbiter.example").unwrap();
        assert_eq!(arbiter_name(None, "arbiter.example:7700"), dns);
        // --arbiter-name wins over the address.
        assert_eq!(arbiter_name(Some(&dns), "10.77.0.3:7700"), dns);
    }
}
