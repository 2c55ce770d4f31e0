//! One client connection of the server's poll loop: a non-blocking socket, the bytes of the
//! request line being received, and the replies not yet sent.
//!
//! Every buffer is bounded: a request line may not exceed MAX_LINE (the connection is
//! closed after an error reply, as nothing inside an unbounded line can be resynchronised
//! on), and while MAX_QUEUED_REPLY bytes of replies wait for a client that does not read,
//! its requests are not read either.
//!
//! Over TLS the same holds for the plaintext; the handshake must end, and the first request
//! come, within the idle deadline like any request.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::RawFd;
use std::time::Instant;

use ft_tls::TlsDir;

use crate::limits::{IDLE_TIMEOUT, MAX_QUEUED_REPLY};
use crate::protocol::{Reply, MAX_LINE};
use crate::sys::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};
use crate::transport::{Transport, Who};

/// Answers one request line from the client `Who`.
pub type Answer<'a> = dyn FnMut(&[u8], &Who) -> Reply + 'a;

/// Bytes read per read(2); at most READS_PER_WAKE of them per wake-up, so a client that
/// sends without pause cannot starve the others.
const CHUNK: usize = 4096;
const READS_PER_WAKE: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Reading requests and answering them.
    Open,
    /// No more requests (EOF or an over-long line): closed once the replies are sent.
    Closing,
    /// Done; the server drops it (which closes the socket).
    Closed,
}

/// What starts `buf`.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A line: `buf[..end]` without its '\n' and a trailing '\r'; the next starts at `next`.
    Line { end: usize, next: usize },
    /// Not a whole line yet, and not over the limit.
    Partial,
    /// More than `max` bytes before a '\n'.
    TooLong,
}

/// Finds the first line of `buf`, of at most `max` bytes (a trailing '\r' counts).
pub fn next_line(buf: &[u8], max: usize) -> Next {
    let window = &buf[..buf.len().min(max.saturating_add(1))];
    match window.iter().position(|&b| b == b'\n') {
        Some(pos) => {
            let end = if pos > 0 && buf[pos - 1] == b'\r' {
                pos - 1
            } else {
                pos
            };
            Next::Line { end, next: pos + 1 }
        }
        None if buf.len() > max => Next::TooLong,
        None => Next::Partial,
    }
}

pub struct Conn {
    stream: Transport,
    pub peer: SocketAddr,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Closed when this passes with no request answered (each answer moves it on): an
    /// idle, trickling or non-reading client cannot keep its slot.
    pub deadline: Instant,
    pub state: State,
    /// Why the TLS handshake failed (the client was refused), for the pool's report.
    pub refused: Option<String>,
}

impl Conn {
    /// `tls`: the server's certificates (`serve --tls-dir`), or None for clear TCP.
    pub fn new(stream: TcpStream, peer: SocketAddr, tls: Option<&TlsDir>) -> io::Result<Self> {
        Ok(Conn {
            stream: Transport::new(stream, tls)?,
            peer,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            deadline: Instant::now() + IDLE_TIMEOUT,
            state: State::Open,
            refused: None,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.stream.fd()
    }

    /// Request bytes that wait inside the TLS session, not in the socket: the server must
    /// call `ready` without waiting for poll.
    pub fn has_buffered(&mut self) -> bool {
        self.interest() & POLLIN != 0 && self.stream.has_plaintext()
    }

    /// The poll events wanted now.
    pub fn interest(&self) -> i16 {
        let mut events = 0;
        if self.state == State::Open && self.outbuf.len() < MAX_QUEUED_REPLY {
            events |= POLLIN;
        }
        if !self.outbuf.is_empty() || self.stream.wants_write() {
            events |= POLLOUT;
        }
        events
    }

    /// Acts on poll's `revents`: reads and answers what arrived, sends queued replies.
    pub fn ready(&mut self, revents: i16, answer: &mut Answer) {
        if revents & POLLNVAL != 0 {
            self.state = State::Closed;
            return;
        }
        if revents & (POLLIN | POLLHUP | POLLERR) != 0 && self.interest() & POLLIN != 0 {
            self.read(answer);
        }
        self.pump(answer);
    }

    /// Closes with a last error line (best effort: never waits for a slow client).
    pub fn close_with(&mut self, why: &str) {
        if self.state != State::Closed {
            if self.outbuf.len() < MAX_QUEUED_REPLY {
                self.outbuf
                    .extend_from_slice(Reply::error(why).to_line().as_bytes());
            }
            self.flush();
            self.stream.close();
            self.state = State::Closed;
        }
    }

    fn read(&mut self, answer: &mut Answer) {
        let mut chunk = [0u8; CHUNK];
        for _ in 0..READS_PER_WAKE {
            if self.state != State::Open || self.outbuf.len() >= MAX_QUEUED_REPLY {
                return;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    // A last line without its newline is still a request.
                    if !self.inbuf.is_empty() {
                        self.inbuf.push(b'\n');
                        self.answer_lines(answer);
                    }
                    if self.state == State::Open {
                        self.state = State::Closing;
                    }
                    return;
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    self.answer_lines(answer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if self.stream.is_tls() && e.kind() == io::ErrorKind::InvalidData {
                        // A bad certificate, another CA, not TLS at all: refused.
                        self.refused = Some(e.to_string());
                    }
                    log::debug!("connection {}: {e}", self.peer);
                    self.state = State::Closed;
                    return;
                }
            }
        }
    }

    /// Answers the complete lines received, while the reply queue has room.
    fn answer_lines(&mut self, answer: &mut Answer) {
        let mut start = 0;
        // Also while Closing after EOF: the lines already received are still answered.
        while self.state != State::Closed && self.outbuf.len() < MAX_QUEUED_REPLY {
            match next_line(&self.inbuf[start..], MAX_LINE) {
                Next::Line { end, next } => {
                    let line = &self.inbuf[start..start + end];
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        let reply = answer(line, &self.stream.who());
                        self.outbuf.extend_from_slice(reply.to_line().as_bytes());
                        self.deadline = Instant::now() + IDLE_TIMEOUT;
                    }
                    start += next;
                }
                Next::Partial => break,
                Next::TooLong => {
                    // Cannot resynchronise inside an unbounded line: say why, then close.
                    let msg = format!("request line longer than {MAX_LINE} bytes; closing");
                    self.outbuf
                        .extend_from_slice(Reply::error(msg).to_line().as_bytes());
                    self.state = State::Closing;
                    start = self.inbuf.len();
                }
            }
        }
        self.inbuf.drain(..start);
    }

    /// Sends what is queued; answers lines held back by a full queue once it drains.
    fn pump(&mut self, answer: &mut Answer) {
        loop {
            self.flush();
            let has_line = matches!(next_line(&self.inbuf, MAX_LINE), Next::Line { .. });
            if self.state == State::Closed || self.outbuf.len() >= MAX_QUEUED_REPLY || !has_line {
                break;
            }
            self.answer_lines(answer);
        }
        if self.state == State::Closing && self.outbuf.is_empty() && !self.stream.wants_write() {
            self.stream.close();
            self.state = State::Closed;
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.stream.flush() {
            log::debug!("connection {}: {e}", self.peer);
            self.state = State::Closed;
        }
        while !self.outbuf.is_empty() && self.state != State::Closed {
            match self.stream.write(&self.outbuf) {
                Ok(0) => self.state = State::Closed,
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("connection {}: {e}", self.peer);
                    self.state = State::Closed;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(next_line(b"abc\r\nxy", 4), Next::Line { end: 3, next: 5 });
        assert_eq!(next_line(b"\n", 4), Next::Line { end: 0, next: 1 });
        assert_eq!(next_line(b"\r\n", 4), Next::Line { end: 0, next: 2 });
        assert_eq!(next_line(b"", 4), Next::Partial);
        assert_eq!(next_line(b"abcd", 4), Next::Partial);
        // Exactly max bytes is a line; max + 1 is not, with or without its newline.
        assert_eq!(next_line(b"abcd\n", 4), Next::Line { end: 4, next: 5 });
        assert_eq!(next_line(b"abcde", 4), Next::TooLong);
        assert_eq!(next_line(b"abcde\n", 4), Next::TooLong);
        // The '\r' counts towards the limit.
        assert_eq!(next_line(b"abcd\r\n", 4), Next::TooLong);
    }
}
