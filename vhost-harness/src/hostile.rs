//! Hostile frontends and peers, for the backends' robustness tests.
//!
//! - [`send_short_memory_table`]: a memory table whose region is larger than the memfd
//!   behind it, with a ring in the part past the end of the file: a backend that maps the
//!   region as told dies of SIGBUS when it reads the ring (mmap(2)).
//! - [`connect_from_child`]: a connection made by another process (optionally as another
//!   user), so that `SO_PEERCRED` on the backend's side names that process and not the test.

// Test fixtures: the casts are of small constants and of lengths of test buffers.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::Frontend;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::{connect_stream, HarnessError};

/// Waits up to `timeout` for the peer to close `s` (EOF or reset; bytes before are
/// skipped); `true` if it did. A peer that keeps sending does not extend the wait.
pub fn closed_within(mut s: &UnixStream, timeout: Duration) -> Result<bool, HarnessError> {
    s.set_read_timeout(Some(timeout))?;
    let mut b = [0u8; 256];
    let deadline = Instant::now() + timeout;
    loop {
        match s.read(&mut b) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

/// Connects to `socket`, negotiates, sends a memory table of one 1 MiB region backed by a
/// 4 KiB memfd, sets up queue 0 with its rings past the end of the memfd and kicks it.
/// Returns whether the backend closed the connection within `timeout`.
pub fn send_short_memory_table(
    socket: impl AsRef<Path>,
    timeout: Duration,
) -> Result<bool, HarnessError> {
    let stream = connect_stream(socket.as_ref(), timeout)?;
    let watch = stream.try_clone()?;
    let fe = Frontend::from_stream(stream, 1);
    fe.set_owner()?;
    let features = fe.get_features()?;
    fe.set_features(features & crate::F_VERSION_1)?;
    let file = crate::memory::memfd("vhost-harness-short", 4096)?;
    let base: u64 = 0x7f00_0000_0000;
    let region = VhostUserMemoryRegionInfo {
        guest_phys_addr: 0,
        memory_size: 1 << 20,
        userspace_addr: base,
        mmap_offset: 0,
        mmap_handle: file.as_raw_fd(),
    };
    fe.set_mem_table(&[region])?;
    // The rest may fail: a careful backend has already dropped the connection.
    let kick = EventFd::new(libc::EFD_NONBLOCK)?;
    let call = EventFd::new(libc::EFD_NONBLOCK)?;
    let ring = VringConfigData {
        queue_max_size: 16,
        queue_size: 16,
        flags: 0,
        desc_table_addr: base + 0x8_0000,
        used_ring_addr: base + 0x9_0000,
        avail_ring_addr: base + 0xa_0000,
        log_addr: None,
    };
    let _ = fe.set_vring_num(0, 16);
    let _ = fe.set_vring_addr(0, &ring);
    let _ = fe.set_vring_base(0, 0);
    let _ = fe.set_vring_call(0, &call);
    let _ = fe.set_vring_kick(0, &kick);
    let _ = kick.write(1);
    closed_within(&watch, timeout)
}

/// Who a child made by [`connect_from_child`] is (setting it needs root).
#[derive(Clone, Debug)]
pub struct ChildIds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// Connects to `path` from a child process (as `ids` if given) and returns the connected
/// socket: the backend sees the child as its peer. The child exits as soon as it has
/// handed the socket over. A connect error in the child (e.g. EACCES) is returned as that
/// error.
pub fn connect_from_child(path: &Path, ids: Option<&ChildIds>) -> io::Result<UnixStream> {
    // Everything the child needs is prepared here: after fork(2) in a multi-threaded
    // process the child may only make async-signal-safe calls (signal-safety(7)).
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let (parent, child) = UnixStream::pair()?;
    let child_fd = child.as_raw_fd();
    // SAFETY: fork has no preconditions; the child below only makes raw system calls.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: only async-signal-safe calls on memory prepared before the fork; the child
        // never returns (it ends with _exit).
        unsafe { child_connect(child_fd, &addr, ids) }
    }
    drop(child);
    let mut status = 0;
    // SAFETY: waits for the child we just forked; `status` is valid.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let mut errno = [0u8; 4];
    let mut fds: [RawFd; 1] = [-1];
    let mut iov = [libc::iovec {
        iov_base: errno.as_mut_ptr().cast(),
        iov_len: errno.len(),
    }];
    // SAFETY: the iovec covers `errno`, which is ours and writable.
    let (n, nfds) = unsafe { parent.recv_with_fds(&mut iov, &mut fds) }.map_err(io::Error::from)?;
    if nfds == 1 {
        // SAFETY: recvmsg just created this descriptor for us.
        let fd = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        return Ok(UnixStream::from(fd));
    }
    if n == 4 {
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
    }
    Err(io::Error::other("the child reported nothing"))
}

/// The child's side of [`connect_from_child`].
///
/// # Safety
/// Only to be called in a freshly forked child; never returns.
unsafe fn child_connect(report: RawFd, addr: &libc::sockaddr_un, ids: Option<&ChildIds>) -> ! {
    let fail = |report: RawFd| -> ! {
        let e = *libc::__errno_location();
        let b = e.to_ne_bytes();
        libc::write(report, b.as_ptr().cast(), b.len());
        libc::_exit(1)
    };
    if let Some(ids) = ids {
        if libc::setgroups(ids.groups.len(), ids.groups.as_ptr()) != 0
            || libc::setgid(ids.gid) != 0
            || libc::setuid(ids.uid) != 0
        {
            fail(report);
        }
    }
    let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
    if s < 0 {
        fail(report);
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    if libc::connect(s, (addr as *const libc::sockaddr_un).cast(), len) != 0 {
        fail(report);
    }
    // SCM_RIGHTS by hand: a stack buffer, no allocation (unix(7), cmsg(3)).
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
    let cmsg = libc::CMSG_FIRSTHDR(&msg);
    (*cmsg).cmsg_level = libc::SOL_SOCKET;
    (*cmsg).cmsg_type = libc::SCM_RIGHTS;
    (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), s);
    if libc::sendmsg(report, &msg, 0) < 0 {
        fail(report);
    }
    libc::_exit(0)
}
