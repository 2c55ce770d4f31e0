//! The two system calls std does not wrap: poll(2) and the open-file limit.

use std::io;
use std::time::Duration;

pub use libc::{pollfd, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};

/// poll(2) on `fds` for at most `timeout`; EINTR counts as "nothing ready".
pub fn poll(fds: &mut [pollfd], timeout: Duration) -> io::Result<usize> {
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    let n = libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many fds to poll"))?;
    // SAFETY: `fds` is a valid, exclusively borrowed array of `n` pollfd structs; poll only
    // writes their `revents` fields.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), n, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(usize::try_from(rc).unwrap_or(0))
}

/// Raises the soft RLIMIT_NOFILE towards `want` (never above the hard limit) and returns
/// the soft limit now in force. Many systems start processes with a soft limit of 1024,
/// fewer than the connections the arbiter keeps.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct, which `lim` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let target = want.min(lim.rlim_max);
    if lim.rlim_cur < target {
        let new = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct, which `new` is.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = target;
    }
    Ok(lim.rlim_cur)
}

/// Sets the accept queue of a listening socket to `backlog` (Linux lets listen(2) be called
/// again on a listening socket for this; the kernel caps it at net.core.somaxconn). std
/// listens with 128: a burst of connections beyond that has its SYNs dropped, and each
/// dropped client waits a 1 s retransmission, longer than the VMM's 500 ms connect timeout.
pub fn set_backlog(fd: std::os::fd::RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen(2) on an fd the caller owns; it changes only the queue length.
    if unsafe { libc::listen(fd, backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
