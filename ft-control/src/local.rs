//! The local (Unix) sockets of the VMM and of the backends: how they are created and who is
//! talking on them.
//!
//! Rules (docs/ARCHITECTURE.md, "Hostile peers"):
//! - A socket is created mode 0600 (its owner only), or 0660 with a group
//!   (`--socket-group`). The mode is put on the socket *before* bind(2): Linux gives the new
//!   socket inode the socket's own mode masked by the umask (unix(7), "Pathname socket
//!   ownership and permissions"), so the path never exists with looser permissions, whatever
//!   the umask. A group is applied before the group bits are opened.
//! - A path that exists already is replaced only if it is a socket owned by this process's
//!   user (a stale socket of an earlier run). Anything else is refused with an error that
//!   names it: a file or a directory (it is not ours to delete), a symbolic link (bind(2)
//!   would not follow it, but whoever made it expects something at its target), a socket of
//!   another user (another service may be listening there).
//! - Peers are identified with `SO_PEERCRED` (socket(7), unix(7)): the pid, uid and gid the
//!   kernel recorded when the peer called connect(2); a peer cannot forge them.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Listen backlog of the sockets made by [`bind`] (the value std uses).
pub const BACKLOG: i32 = 128;

/// Errors creating a local socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("refusing to replace {0}: it exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("refusing to replace {0}: it is a symbolic link")]
    Symlink(PathBuf),
    #[error(
        "refusing to replace {path}: it belongs to uid {owner}, not to this process (uid {ours})"
    )]
    OtherOwner {
        path: PathBuf,
        owner: u32,
        ours: u32,
    },
    #[error("socket path {0} is too long for a Unix socket address (at most 107 bytes)")]
    TooLong(PathBuf),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
}

/// Who is at the other end of a connected Unix socket (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

impl PeerCred {
    /// The credentials of the peer of `stream`.
    pub fn of(stream: &UnixStream) -> io::Result<PeerCred> {
        // SAFETY: all-zero is a valid `ucred` (plain integers).
        let mut cred: libc::ucred = unsafe { mem::zeroed() };
        // 12 bytes: fits a socklen_t.
        #[allow(clippy::cast_possible_truncation)]
        let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that large and
        // lives across the call; the fd is a socket we own.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PeerCred {
            pid: cred.pid,
            uid: cred.uid,
            gid: cred.gid,
        })
    }

    /// Whether this peer may use our sockets: the same user as this process, root, or (with
    /// a socket group) a process whose group is that group.
    pub fn may_connect(&self, group: Option<u32>) -> bool {
        self.uid == euid() || self.uid == 0 || group.is_some_and(|g| g == self.gid)
    }
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A group given by name or number (`--socket-group`).
pub fn parse_group(name: &str) -> Result<u32, SocketError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let unknown = || SocketError::UnknownGroup(name.to_string());
    let cname = CString::new(name).map_err(|_| unknown())?;
    // SAFETY: all-zero is a valid `group` (null pointers and integers).
    let mut grp: libc::group = unsafe { mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; getgrnam_r writes the entry into `grp`
    // and its strings into `buf` (of the length given), and sets `found`.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(unknown());
    }
    Ok(grp.gr_gid)
}

/// Removes a stale socket of ours at `path`; refuses anything else (see the module docs).
fn remove_stale(path: &Path) -> Result<(), SocketError> {
    let io_err = |what, source| SocketError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", e)),
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(SocketError::Symlink(path.to_path_buf()));
    }
    if !ft.is_socket() {
        return Err(SocketError::NotASocket(path.to_path_buf()));
    }
    if meta.uid() != euid() {
        return Err(SocketError::OtherOwner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            ours: euid(),
        });
    }
    std::fs::remove_file(path).map_err(|e| io_err("remove the stale socket", e))
}

fn sockaddr(path: &Path) -> Result<(libc::sockaddr_un, libc::socklen_t), SocketError> {
    // SAFETY: all-zero is a valid `sockaddr_un`.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    // AF_UNIX is 1: fits a sa_family_t.
    #[allow(clippy::cast_possible_truncation)]
    let family = libc::AF_UNIX as libc::sa_family_t;
    addr.sun_family = family;
    let bytes = path.as_os_str().as_bytes();
    // One byte stays for the terminating NUL (unix(7)).
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(SocketError::TooLong(path.to_path_buf()));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src.cast_signed();
    }
    let len = mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // At most sizeof(sockaddr_un) (110 bytes, checked above): fits a socklen_t.
    #[allow(clippy::cast_possible_truncation)]
    Ok((addr, len as libc::socklen_t))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Creates a listening socket at `path`, mode 0600, or 0660 and group `group`; see the
/// module documentation for what happens to an existing path.
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, SocketError> {
    bind_with_backlog(path, group, BACKLOG)
}

/// [`bind`] with a chosen listen backlog (0 lets exactly one connection wait: Linux refuses
/// a connection only once the queue holds more than the backlog).
pub fn bind_with_backlog(
    path: &Path,
    group: Option<u32>,
    backlog: i32,
) -> Result<UnixListener, SocketError> {
    let io_err = |what, source| SocketError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    remove_stale(path)?;
    let (addr, len) = sockaddr(path)?;
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    check(fd).map_err(|e| io_err("create a socket for", e))?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fchmod on a socket we own; it sets the mode bind(2) gives the new inode.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) })
        .map_err(|e| io_err("set the mode of", e))?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes that lives across the call.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })
    .map_err(|e| io_err("bind", e))?;
    let mode = match group {
        Some(gid) => {
            let cpath = CString::new(path.as_os_str().as_bytes())
                .map_err(|_| SocketError::TooLong(path.to_path_buf()))?;
            // SAFETY: `cpath` is a valid NUL-terminated path; lchown does not follow a link.
            check(unsafe { libc::lchown(cpath.as_ptr(), u32::MAX, gid) })
                .map_err(|e| io_err("set the group of", e))?;
            0o660
        }
        None => 0o600,
    };
    // The umask may have taken bits away from 0600; set exactly what the rules say.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| io_err("set the mode of", e))?;
    // SAFETY: listen(2) on a bound socket we own.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) }).map_err(|e| io_err("listen on", e))?;
    Ok(UnixListener::from(fd))
}

/// Connects to the listening socket at `path` without waiting: `WouldBlock` if its listen
/// queue is full (unix(7): a stream socket's connect does not complete asynchronously).
pub fn connect_now(path: &Path) -> io::Result<UnixStream> {
    let (addr, len) = sockaddr(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    check(fd)?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes that lives across the call.
    check(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("ftc-local-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        Dir(d)
    }
    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn socket_is_owner_only_and_a_stale_one_is_replaced() {
        let d = dir("mode");
        let p = d.0.join("s");
        drop(UnixListener::bind(&p).expect("stale socket"));
        let l = bind(&p, None).expect("bind over a stale socket");
        assert_eq!(mode(&p), 0o600);
        let c = UnixStream::connect(&p).expect("connect");
        let (s, _) = l.accept().expect("accept");
        let peer = PeerCred::of(&s).expect("peer");
        assert_eq!(peer.pid, std::process::id().cast_signed());
        assert_eq!(peer.uid, euid());
        assert!(peer.may_connect(None));
        drop(c);
    }

    #[test]
    fn a_backlog_of_zero_lets_exactly_one_connection_wait() {
        let d = dir("backlog");
        let p = d.0.join("s");
        let l = bind_with_backlog(&p, None, 0).expect("bind");
        let first = connect_now(&p).expect("the one place");
        let second = connect_now(&p);
        assert_eq!(
            second.map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock),
            "the queue is full"
        );
        let (s, _) = l.accept().expect("accept");
        drop((first, s));
    }

    #[test]
    fn a_group_opens_the_group_bits() {
        let d = dir("group");
        let p = d.0.join("s");
        let gid = parse_group("0").expect("gid");
        let _l = bind(&p, Some(gid)).expect("bind");
        assert_eq!(mode(&p), 0o660);
        assert_eq!(std::fs::metadata(&p).expect("meta").gid(), gid);
        assert_eq!(parse_group("root").expect("root"), 0);
        assert!(matches!(
            parse_group("no-such-group-here"),
            Err(SocketError::UnknownGroup(_))
        ));
    }

    #[test]
    fn files_links_and_other_users_sockets_are_refused() {
        let d = dir("refuse");
        let file = d.0.join("file");
        std::fs::write(&file, b"keep").expect("file");
        assert!(matches!(bind(&file, None), Err(SocketError::NotASocket(_))));
        assert_eq!(std::fs::read(&file).expect("kept"), b"keep");
        let link = d.0.join("link");
        std::os::unix::fs::symlink(d.0.join("elsewhere"), &link).expect("symlink");
        assert!(matches!(bind(&link, None), Err(SocketError::Symlink(_))));
        // Giving a socket to another user needs root (the tests run as root).
        if euid() == 0 {
            let theirs = d.0.join("theirs");
            drop(UnixListener::bind(&theirs).expect("socket"));
            std::os::unix::fs::lchown(&theirs, Some(65534), None).expect("chown");
            match bind(&theirs, None) {
                Err(SocketError::OtherOwner { owner: 65534, .. }) => {}
                other => panic!("expected OtherOwner, got {other:?}"),
            }
            assert!(theirs.exists(), "their socket is left alone");
        }
        let long = d.0.join("x".repeat(120));
        assert!(matches!(bind(&long, None), Err(SocketError::TooLong(_))));
    }

    #[test]
    fn peers_of_other_users_need_the_group() {
        let other = PeerCred {
            pid: 1,
            uid: 65534,
            gid: 4242,
        };
        // Only meaningful when the tests do not run as that user.
        if euid() != 65534 {
            assert!(!other.may_connect(None));
            assert!(!other.may_connect(Some(1)));
            assert!(other.may_connect(Some(4242)));
        }
        let root = PeerCred {
            pid: 1,
            uid: 0,
            gid: 0,
        };
        assert!(root.may_connect(None));
    }
}
