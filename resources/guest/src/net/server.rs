//! The TCP side of the kv server: a smoltcp interface on the virtio-net device, a pool of
//! listening sockets on port 6379 and one `Conn` per client connection.
//!
//! One main-loop iteration (driven by `modes::kv`): `ingress` (receive frames, keep
//! LISTENERS sockets listening), `execute` (read requests, run complete commands, queue
//! replies), the group commit of the log (by the caller), `respond` (move replies into the
//! sockets, close and reap connections), `egress` (send segments). Replies are queued in
//! `Conn::output` and handed to TCP only after the commit, so no client ever sees the effect
//! of a write before it is durable.

use crate::virtio::net::VirtioNet;
use alloc::vec;
use alloc::vec::Vec;
use guestlib::kv::commands::{Engine, Flow, ServerInfo};
use guestlib::kv::resp::{self, Parsed};
use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};

pub const PORT: u16 = 6379;
/// Sockets kept listening. Every received frame is followed by a refill, and one frame opens
/// at most one connection, so a burst of SYNs never finds the pool empty.
const LISTENERS: usize = 16;
/// Connections at most (then SYNs are refused with RST).
const MAX_CONNS: usize = 512;
const CLIENT_TIMEOUT_SECS: u64 = 60;
const RX_BUF: usize = 16 * 1024;
const TX_BUF: usize = 16 * 1024;
/// Stop running a client's commands while this much of its output is unsent.
const OUTPUT_HIGH: usize = 256 * 1024;
/// Largest request accepted (a client sending more without completing a command is cut off).
const INPUT_MAX: usize = 2 * resp::MAX_BULK + 64 * 1024;

struct Conn {
    handle: SocketHandle,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes of `output` already handed to the socket.
    sent: usize,
    /// Send what is queued, then close (QUIT, protocol error, peer closed).
    closing: bool,
    /// `close()` was called (our FIN is queued).
    fin: bool,
}

pub struct Server {
    iface: Interface,
    sockets: SocketSet<'static>,
    listeners: Vec<SocketHandle>,
    conns: Vec<Conn>,
    total_conns: u64,
}

impl Server {
    pub fn new(
        net: &mut VirtioNet,
        ip: ([u8; 4], u8),
        gw: Option<[u8; 4]>,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut config = Config::new(EthernetAddress(net.mac).into());
        // Deterministic: TCP initial sequence numbers and ephemeral ports derive from it.
        config.random_seed = seed;
        let mut iface = Interface::new(config, net, now);
        let (a, prefix) = ip;
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(
                    Ipv4Address::new(a[0], a[1], a[2], a[3]).into(),
                    prefix,
                ))
                .expect("one address");
        });
        if let Some(g) = gw {
            iface
                .routes_mut()
                .add_default_ipv4_route(Ipv4Address::new(g[0], g[1], g[2], g[3]))
                .expect("one route");
        }
        let mut server = Self {
            iface,
            sockets: SocketSet::new(Vec::new()),
            listeners: Vec::new(),
            conns: Vec::new(),
            total_conns: 0,
        };
        server.refill_listeners();
        server
    }

    pub fn info(&self, uptime_secs: u64) -> ServerInfo {
        ServerInfo {
            uptime_secs,
            connected_clients: self.conns.len(),
            total_connections: self.total_conns,
        }
    }

    /// Moves listeners that accepted a connection to `conns` and opens new listeners.
    fn refill_listeners(&mut self) {
        let mut i = 0;
        while i < self.listeners.len() {
            let handle = self.listeners[i];
            let s = self.sockets.get_mut::<tcp::Socket>(handle);
            if s.is_listening() {
                i += 1;
                continue;
            }
            self.listeners.swap_remove(i);
            if s.state() == State::Closed {
                self.sockets.remove(handle);
            } else {
                self.total_conns += 1;
                self.conns.push(Conn {
                    handle,
                    input: Vec::new(),
                    output: Vec::new(),
                    sent: 0,
                    closing: false,
                    fin: false,
                });
            }
        }
        while self.listeners.len() < LISTENERS
            && self.conns.len() + self.listeners.len() < MAX_CONNS
        {
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; RX_BUF]),
                tcp::SocketBuffer::new(vec![0; TX_BUF]),
            );
            // Replies are small and requests pipelined: no Nagle delay.
            s.set_nagle_enabled(false);
            // Reap clients that vanished with replies outstanding (smoltcp aborts when the
            // peer sends nothing for this long while data is unacknowledged).
            s.set_timeout(Some(Duration::from_secs(CLIENT_TIMEOUT_SECS)));
            s.listen(PORT).expect("listen on a fresh socket");
            self.listeners.push(self.sockets.add(s));
        }
    }

    /// Processes every received frame. Returns whether any arrived.
    pub fn ingress(&mut self, now: Instant, net: &mut VirtioNet) -> bool {
        self.iface.poll_maintenance(now);
        let mut any = false;
        while self.iface.poll_ingress_single(now, net, &mut self.sockets)
            != PollIngressSingleResult::None
        {
            any = true;
            self.refill_listeners();
        }
        any
    }

    /// Reads requests and runs the complete commands of every connection, in connection
    /// order. Writes go to the log's pending batch. Returns whether anything was read or run.
    pub fn execute(&mut self, engine: &mut Engine, info: &ServerInfo) -> bool {
        let mut progress = false;
        for c in &mut self.conns {
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            while s.can_recv() && c.input.len() < INPUT_MAX {
                let room = INPUT_MAX - c.input.len();
                let n = s
                    .recv(|b| {
                        let n = b.len().min(room);
                        c.input.extend_from_slice(&b[..n]);
                        (n, n)
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                progress = true;
            }
            let mut pos = 0;
            while !c.closing && c.output.len() - c.sent < OUTPUT_HIGH {
                match resp::parse(&c.input[pos..]) {
                    Ok(Parsed::Command(args, n)) => {
                        pos += n;
                        progress = true;
                        if engine.execute(&args, info, &mut c.output) == Flow::Close {
                            c.closing = true;
                        }
                    }
                    Ok(Parsed::Empty(n)) => pos += n,
                    Ok(Parsed::Incomplete) => {
                        if c.input.len() - pos >= INPUT_MAX {
                            resp::error(&mut c.output, b"ERR Protocol error: request too big");
                            c.closing = true;
                        } else if s.state() == State::CloseWait && !s.can_recv() {
                            // The client closed its side: no more requests will complete.
                            c.closing = true;
                        }
                        break;
                    }
                    Err(e) => {
                        let mut msg = b"ERR Protocol error: ".to_vec();
                        msg.extend_from_slice(e.0.as_bytes());
                        resp::error(&mut c.output, &msg);
                        c.closing = true;
                    }
                }
            }
            c.input.drain(..pos);
        }
        progress
    }

    /// Hands queued replies to TCP, closes finished connections and reaps dead sockets.
    /// Call only after the log commit. Returns whether any bytes were queued or sockets
    /// changed.
    pub fn respond(&mut self) -> bool {
        let mut progress = false;
        let sockets = &mut self.sockets;
        self.conns.retain_mut(|c| {
            let s = sockets.get_mut::<tcp::Socket>(c.handle);
            if c.sent < c.output.len() && s.may_send() {
                let n = s.send_slice(&c.output[c.sent..]).unwrap_or(0);
                c.sent += n;
                progress |= n > 0;
                if c.sent == c.output.len() {
                    c.output.clear();
                    c.sent = 0;
                } else if c.sent > OUTPUT_HIGH {
                    c.output.drain(..c.sent);
                    c.sent = 0;
                }
            }
            if c.closing && !c.fin && c.output.is_empty() {
                s.close();
                c.fin = true;
                progress = true;
            }
            // Closed (reset, or fully closed) or TIME-WAIT: nothing more to do for this client.
            let dead = matches!(s.state(), State::Closed | State::TimeWait);
            if dead {
                sockets.remove(c.handle);
                progress = true;
            }
            !dead
        });
        if progress {
            self.refill_listeners();
        }
        progress
    }

    /// Sends what the sockets have queued. Returns whether anything was sent.
    pub fn egress(&mut self, now: Instant, net: &mut VirtioNet) -> bool {
        let mut any = false;
        while self.iface.poll_egress(now, net, &mut self.sockets) == PollResult::SocketStateChanged
        {
            any = true;
        }
        any
    }
}
