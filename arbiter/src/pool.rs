//! The connections the server keeps, and who is closed when there are too many.
//!
//! A new connection is always accepted; to make room the longest-idle connection of the
//! same client address goes (at MAX_PER_IP), or the longest-idle of all (at the total
//! limit). So a flood, idle or not, costs its sender its own older connections, and the
//! request of a VMM that connects to fail over is read at once (it sends it right after
//! connecting, so its connection is the newest, never the longest-idle).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::conn::{Conn, State};
use crate::limits::{IDLE_TIMEOUT, MAX_PER_IP};

/// How often the closings for the limits are summed up in the log (not one line each: a
/// flood would flood the log too).
const REPORT_EVERY: Duration = Duration::from_secs(10);

pub struct Pool {
    pub conns: Vec<Conn>,
    per_ip: HashMap<IpAddr, usize>,
    max_total: usize,
    evicted: u64,
    idle_closed: u64,
    /// TLS handshakes refused since the last report, and the last reason.
    refused: u64,
    last_refusal: String,
    last_report: Instant,
}

impl Pool {
    pub fn new(max_total: usize) -> Self {
        Pool {
            conns: Vec::new(),
            per_ip: HashMap::new(),
            max_total: max_total.max(1),
            evicted: 0,
            idle_closed: 0,
            refused: 0,
            last_refusal: String::new(),
            last_report: Instant::now(),
        }
    }

    /// Makes room for a connection from `ip`, then keeps `conn`.
    pub fn admit(&mut self, conn: Conn) {
        let ip = conn.peer.ip();
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= MAX_PER_IP {
            self.evict_oldest(|c| c.peer.ip() == ip);
        }
        if self.conns.len() >= self.max_total {
            self.evict_oldest(|_| true);
        }
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.conns.push(conn);
    }

    /// Closes and drops the longest-idle connection that `pick` accepts, if any.
    pub fn evict_oldest(&mut self, pick: impl Fn(&Conn) -> bool) {
        let oldest = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| pick(c))
            .min_by_key(|(_, c)| c.deadline)
            .map(|(i, _)| i);
        if let Some(i) = oldest {
            let mut c = self.conns.swap_remove(i);
            log::debug!("connection {}: closed to make room", c.peer);
            c.close_with("too many connections; closing the longest idle");
            self.forget(&c);
            self.evicted += 1;
        }
    }

    /// Closes the connections whose deadline has passed.
    pub fn expire(&mut self, now: Instant) {
        for c in &mut self.conns {
            if c.state != State::Closed && c.deadline <= now {
                log::debug!("connection {}: idle, closed", c.peer);
                c.close_with(&format!(
                    "no request for {} s; closing",
                    IDLE_TIMEOUT.as_secs()
                ));
                self.idle_closed += 1;
            }
        }
    }

    /// Drops the closed connections (closing their sockets).
    pub fn sweep(&mut self) {
        let mut i = 0;
        while i < self.conns.len() {
            if self.conns[i].state == State::Closed {
                let c = self.conns.swap_remove(i);
                self.note_refusal(&c);
                self.forget(&c);
            } else {
                i += 1;
            }
        }
    }

    /// Counts `c`'s refused TLS handshake, if it had one: the first of a period is logged
    /// at once, the rest are summed up in `report`. For every closed connection, also one
    /// that closed before it was admitted (its bad handshake came with the connect).
    pub fn note_refusal(&mut self, c: &Conn) {
        if let Some(why) = &c.refused {
            if self.refused == 0 {
                log::warn!("connection {}: TLS handshake refused: {why}", c.peer);
            }
            self.refused += 1;
            self.last_refusal = format!("{}: {why}", c.peer);
        }
    }

    /// The earliest deadline, for poll's timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().map(|c| c.deadline).min()
    }

    /// Logs, at most every REPORT_EVERY, how many connections the limits closed.
    pub fn report(&mut self) {
        if self.last_report.elapsed() < REPORT_EVERY {
            return;
        }
        if self.evicted > 0 || self.idle_closed > 0 {
            log::warn!(
                "closed {} idle connection(s) (no request for {} s) and {} beyond the limits \
                 ({MAX_PER_IP} per client address, {} in all) in the last {} s; {} open",
                self.idle_closed,
                IDLE_TIMEOUT.as_secs(),
                self.evicted,
                self.max_total,
                REPORT_EVERY.as_secs(),
                self.conns.len()
            );
        }
        if self.refused > 1 {
            log::warn!(
                "refused {} TLS handshake(s) in the last {} s (the last: {})",
                self.refused,
                REPORT_EVERY.as_secs(),
                self.last_refusal
            );
        }
        self.evicted = 0;
        self.idle_closed = 0;
        self.refused = 0;
        self.last_report = Instant::now();
    }

    fn forget(&mut self, c: &Conn) {
        let ip = c.peer.ip();
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// `n` connections to a local listener, as the server sees them.
    fn conns(n: usize) -> (Vec<TcpStream>, Vec<Conn>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // One at a time: more than the listen backlog of unaccepted connects would stall.
        (0..n)
            .map(|_| {
                let client = TcpStream::connect(addr).unwrap();
                let (s, peer) = l.accept().unwrap();
                (client, Conn::new(s, peer, None).unwrap())
            })
            .unzip()
    }

    #[test]
    fn per_ip_and_total_limits_close_the_longest_idle() {
        let (_clients, served) = conns(MAX_PER_IP + 3);
        let mut pool = Pool::new(MAX_PER_IP + 10);
        let first = served[0].peer;
        let second = served[1].peer;
        for c in served {
            pool.admit(c);
        }
        // All from 127.0.0.1: the three oldest made room for the three newest.
        assert_eq!(pool.conns.len(), MAX_PER_IP);
        assert_eq!(pool.evicted, 3);
        assert!(pool
            .conns
            .iter()
            .all(|c| c.peer != first && c.peer != second));

        let (_clients, served) = conns(2);
        let mut pool = Pool::new(1);
        let mut it = served.into_iter();
        pool.admit(it.next().unwrap());
        let newest = it.next().unwrap();
        let newest_peer = newest.peer;
        pool.admit(newest);
        assert_eq!(pool.conns.len(), 1);
        assert_eq!(pool.conns[0].peer, newest_peer);
        pool.sweep();
        assert_eq!(pool.per_ip.values().sum::<usize>(), 1);
    }

    #[test]
    fn expired_connections_are_closed_and_swept() {
        let (_clients, served) = conns(3);
        let mut pool = Pool::new(10);
        for c in served {
            pool.admit(c);
        }
        pool.conns[1].deadline = Instant::now() - Duration::from_millis(1);
        pool.expire(Instant::now());
        pool.sweep();
        assert_eq!(pool.conns.len(), 2);
        assert_eq!(pool.idle_closed, 1);
        assert_eq!(pool.per_ip.values().sum::<usize>(), 2);
    }
}
