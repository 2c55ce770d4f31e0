//! Relaying one frontend connection to the library's end, message by message.
//!
//! Frontend to backend, the relay reads whole vhost-user messages (vhost-user spec,
//! "Message Specification": a 12-byte header of request, flags and payload size, then the
//! payload; file descriptors travel as `SCM_RIGHTS` with the header), checks the memory
//! regions they name ([`crate::regions`]) and forwards them with their descriptors.
//! Waiting for the next message has no limit (a VMM may stay quiet for hours between
//! negotiation and the guest driver starting the device), but a message once begun must be
//! complete within [`crate::MESSAGE_TIMEOUT`]. A bad region ends the connection, as the
//! library ends it for a message it refuses; so does a payload size above the protocol's
//! `MAX_MSG_SIZE` (the header is passed on first, for the library to refuse and log). Backend to frontend (replies), bytes and descriptors pass unchanged.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use ft_control::local::PeerCred;
use vhost::vhost_user::message::{MAX_ATTACHED_FD_ENTRIES, MAX_MSG_SIZE};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::regions::{self, RegionError};
use crate::{FrontendSlot, MESSAGE_TIMEOUT};

/// Size of a vhost-user message header (request, flags, size: three u32).
const HEADER: usize = 12;

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("stopped in the middle of a message for more than {MESSAGE_TIMEOUT:?}")]
    Stalled,
    #[error("message payload of {0} bytes exceeds the protocol's {MAX_MSG_SIZE}")]
    TooLarge(usize),
    #[error("{0}")]
    Region(#[from] RegionError),
}

/// One relayed frontend connection; dropping it ends the connection.
pub struct Session {
    peer: PeerCred,
    frontend: UnixStream,
    backend: UnixStream,
    threads: Vec<JoinHandle<()>>,
    slot: Arc<FrontendSlot>,
}

impl Session {
    /// Who the frontend is.
    pub fn peer(&self) -> PeerCred {
        self.peer
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.frontend.shutdown(Shutdown::Both);
        let _ = self.backend.shutdown(Shutdown::Both);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.slot.set(None);
    }
}

/// Starts relaying between `frontend` (whose peer is `peer`) and `backend` (connected to
/// the library); `slot` names the frontend while the session lasts.
pub fn start(
    frontend: UnixStream,
    peer: PeerCred,
    backend: UnixStream,
    slot: Arc<FrontendSlot>,
) -> io::Result<Session> {
    slot.set(Some(peer));
    let mut session = Session {
        peer,
        frontend: frontend.try_clone()?,
        backend: backend.try_clone()?,
        threads: Vec::new(),
        slot,
    };
    let (f, b) = (frontend.try_clone()?, backend.try_clone()?);
    session.threads.push(
        thread::Builder::new()
            .name("vu-relay-in".into())
            .spawn(move || {
                let r = inbound(&f, &b);
                report(peer.pid, r);
                let _ = f.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            })?,
    );
    session.threads.push(
        thread::Builder::new()
            .name("vu-relay-out".into())
            .spawn(move || {
                if let Err(e) = outbound(&backend, &frontend) {
                    log::debug!("vhost-user relay to pid {}: {e}", peer.pid);
                }
                let _ = frontend.shutdown(Shutdown::Both);
                let _ = backend.shutdown(Shutdown::Both);
            })?,
    );
    Ok(session)
}

fn report(pid: i32, r: Result<(), RelayError>) {
    match r {
        Ok(()) => log::debug!("vhost-user frontend pid {pid}: end of its messages"),
        Err(RelayError::Io(e)) => log::debug!("vhost-user frontend pid {pid}: {e}"),
        Err(e @ RelayError::Stalled) => {
            log::warn!("vhost-user frontend pid {pid}: {e}; dropping the connection")
        }
        Err(e) => log::error!("vhost-user frontend pid {pid}: {e}; dropping the connection"),
    }
}

/// Receives bytes into `buf` and the descriptors sent with them.
fn recv_with_files(s: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<File>)> {
    let mut fds: [RawFd; MAX_ATTACHED_FD_ENTRIES] = [-1; MAX_ATTACHED_FD_ENTRIES];
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    loop {
        // SAFETY: the iovec covers `buf`, which is ours and writable for its whole length.
        match unsafe { s.recv_with_fds(&mut iov, &mut fds) } {
            Ok((n, nfds)) => {
                let files = fds[..nfds]
                    .iter()
                    // SAFETY: recvmsg just created these descriptors for us; nothing else
                    // owns them.
                    .map(|&fd| unsafe { File::from_raw_fd(fd) })
                    .collect();
                return Ok((n, files));
            }
            Err(e) if e.errno() == libc::EINTR => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends `parts` in order with `files` attached to the first byte.
fn send_with_files(s: &UnixStream, parts: &[&[u8]], files: &[File]) -> io::Result<()> {
    let mut w: &UnixStream = s;
    if files.is_empty() {
        for p in parts {
            w.write_all(p)?;
        }
        return Ok(());
    }
    let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
    let sent = s.send_with_fds(parts, &fds).map_err(io::Error::from)?;
    // A short send (a signal, a full buffer) leaves the rest, without descriptors.
    let mut skip = sent;
    for p in parts {
        let done = skip.min(p.len());
        skip -= done;
        w.write_all(&p[done..])?;
    }
    Ok(())
}

/// Fills `buf` by `deadline`.
fn read_by(s: &UnixStream, mut buf: &mut [u8], deadline: Instant) -> Result<(), RelayError> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RelayError::Stalled);
        }
        s.set_read_timeout(Some(left))?;
        match (&*s).read(buf) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(RelayError::Stalled)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn inbound(f: &UnixStream, b: &UnixStream) -> Result<(), RelayError> {
    let mut hdr = [0u8; HEADER];
    loop {
        f.set_read_timeout(None)?;
        let (n, files) = recv_with_files(f, &mut hdr)?;
        if n == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + MESSAGE_TIMEOUT;
        read_by(f, &mut hdr[n..], deadline)?;
        let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let (request, size) = (word(0), word(8) as usize);
        if size > MAX_MSG_SIZE {
            // The library judges the header (and logs its refusal) before the relay ends.
            send_with_files(b, &[&hdr], &files)?;
            return Err(RelayError::TooLarge(size));
        }
        let mut body = vec![0u8; size];
        read_by(f, &mut body, deadline)?;
        regions::check(request, &body, &files)?;
        send_with_files(b, &[&hdr, &body], &files)?;
    }
}

fn outbound(b: &UnixStream, f: &UnixStream) -> io::Result<()> {
    let mut buf = vec![0u8; HEADER + MAX_MSG_SIZE];
    loop {
        let (n, files) = recv_with_files(b, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        send_with_files(f, &[&buf[..n]], &files)?;
    }
}
