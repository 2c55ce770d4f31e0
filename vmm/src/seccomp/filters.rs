//! The allowlist of each thread kind (docs/ARCHITECTURE.md, "Seccomp"). A syscall that is
//! not listed traps (SIGSYS, `super::handler`). Lists are built from what the threads do
//! (std's threads and allocator, the KVM ioctls, the socket calls of each channel); an
//! argument is checked where that is cheap: ioctl by request (KVM's by its type byte),
//! socket by domain, prctl by option, openat read-only.

use std::collections::BTreeMap;

use seccompiler::{
    SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompRule,
};

use super::ThreadKind;

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// `ioctl` request type byte of every KVM ioctl (`_IO(KVMIO, nr)`): bits 8..16.
const KVMIO: u64 = 0xae;
/// Generic ioctls std and the terminal code use: FIONBIO (set_nonblocking), FIOCLEX,
/// TCGETS (is_terminal).
const GENERIC_IOCTLS: [u64; 3] = [0x5421, 0x5451, 0x5401];

fn allow(rules: &mut Rules, syscalls: &[i64]) {
    for &nr in syscalls {
        rules.insert(nr, Vec::new()); // an empty rule list: allowed whatever the arguments
    }
}

/// Adds rules for `nr`: allowed when argument `arg` equals one of `values` (masked by `mask`).
fn allow_if(
    rules: &mut Rules,
    nr: i64,
    arg: u8,
    mask: u64,
    values: &[u64],
) -> Result<(), seccompiler::BackendError> {
    let list = rules.entry(nr).or_default();
    for &v in values {
        let cond = Cond::new(arg, Len::Dword, Op::MaskedEq(mask), v)?;
        list.push(SeccompRule::new(vec![cond])?);
    }
    Ok(())
}

/// What every thread needs: std (allocation, thread exit, locks, time), reading and writing
/// its fds, closing them, and what the SIGSYS handler itself calls (prctl PR_GET_NAME,
/// write, exit_group).
fn base(rules: &mut Rules) -> Result<(), seccompiler::BackendError> {
    allow(
        rules,
        &[
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_close,
            libc::SYS_futex,
            libc::SYS_mmap,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_mprotect,
            libc::SYS_madvise,
            libc::SYS_brk,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_sigaltstack,
            libc::SYS_sched_yield,
            libc::SYS_sched_getaffinity,
            libc::SYS_clock_gettime,
            libc::SYS_clock_nanosleep,
            libc::SYS_nanosleep,
            libc::SYS_gettid,
            libc::SYS_getpid,
            libc::SYS_getrandom,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_fcntl,
            libc::SYS_dup,
            libc::SYS_fstat,
            libc::SYS_newfstatat,
            libc::SYS_statx,
            libc::SYS_lseek,
            libc::SYS_poll,
            libc::SYS_ppoll,
            libc::SYS_rseq,
            libc::SYS_set_robust_list,
            // Any thread may hand periodic work to the event loop (`event_loop::every`: a
            // timerfd) and wake it (an eventfd write).
            libc::SYS_eventfd2,
            libc::SYS_timerfd_create,
            libc::SYS_timerfd_settime,
            libc::SYS_timerfd_gettime,
        ],
    );
    allow_if(
        rules,
        libc::SYS_prctl,
        0,
        u64::MAX,
        &[libc::PR_GET_NAME as u64],
    )?;
    allow_if(rules, libc::SYS_ioctl, 1, u64::MAX, &GENERIC_IOCTLS)?;
    // Read-only opens: glibc's malloc reads /proc/sys/vm/overcommit_memory the first time a
    // thread's arena shrinks (seen on a survivor's ft-precopy thread), and the resolver
    // reads its files (the arbiter's address may be a host name).
    let read_only = [libc::O_RDONLY as u64];
    allow_if(
        rules,
        libc::SYS_openat,
        2,
        libc::O_ACCMODE as u64,
        &read_only,
    )?;
    Ok(())
}

/// Socket I/O on connected sockets (TCP logging channel, Unix control and vhost-user).
fn socket_io(rules: &mut Rules) {
    allow(
        rules,
        &[
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_sendmsg,
            libc::SYS_recvmsg,
            libc::SYS_shutdown,
            libc::SYS_setsockopt,
            libc::SYS_getsockopt,
            libc::SYS_getsockname,
            libc::SYS_getpeername,
        ],
    );
}

/// New connections: socket (Unix, IPv4, IPv6 only) and connect.
fn connect(rules: &mut Rules) -> Result<(), seccompiler::BackendError> {
    // Small positive constants (socket(2), prctl(2)): the casts keep them.
    let domains =
        [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6].map(|d| u64::from(d.cast_unsigned()));
    allow_if(rules, libc::SYS_socket, 0, u64::MAX, &domains)?;
    allow(rules, &[libc::SYS_connect]);
    Ok(())
}

/// Starting threads: clone/clone3, naming the child (PR_SET_NAME runs in the child under
/// its creator's filter) and the child installing its own filter (no_new_privs, seccomp).
fn spawn(rules: &mut Rules) -> Result<(), seccompiler::BackendError> {
    allow(rules, &[libc::SYS_clone, libc::SYS_clone3]);
    let options =
        [libc::PR_SET_NAME, libc::PR_SET_NO_NEW_PRIVS].map(|o| u64::from(o.cast_unsigned()));
    allow_if(rules, libc::SYS_prctl, 0, u64::MAX, &options)?;
    allow_if(
        rules,
        libc::SYS_seccomp,
        0,
        u64::MAX,
        &[u64::from(libc::SECCOMP_SET_MODE_FILTER)],
    )?;
    Ok(())
}

/// Every KVM ioctl (type byte KVMIO), on the vCPU, VM or /dev/kvm fd.
fn kvm(rules: &mut Rules) -> Result<(), seccompiler::BackendError> {
    allow_if(rules, libc::SYS_ioctl, 1, 0xff00, &[KVMIO << 8])
}

/// The rules of `kind` (see the module doc and docs/ARCHITECTURE.md).
pub fn rules(kind: ThreadKind) -> Result<Rules, seccompiler::BackendError> {
    let mut r = Rules::new();
    base(&mut r)?;
    match kind {
        // After setup the main thread only waits for the vCPU thread and exits.
        ThreadKind::Main => {}
        ThreadKind::EventLoop => {
            allow(
                &mut r,
                &[
                    libc::SYS_epoll_wait,
                    libc::SYS_epoll_pwait,
                    libc::SYS_epoll_ctl,
                ],
            );
            socket_io(&mut r);
            connect(&mut r)?;
        }
        ThreadKind::Ft | ThreadKind::TlsRelay => socket_io(&mut r),
        ThreadKind::TlsHandshake => {
            socket_io(&mut r);
            allow(&mut r, &[libc::SYS_socketpair]); // the relay's pair
            spawn(&mut r)?; // the relay thread (which installs TlsRelay)
        }
        ThreadKind::Precopy => {
            socket_io(&mut r);
            kvm(&mut r)?; // the dirty log: KVM_SET_USER_MEMORY_REGION, KVM_GET_DIRTY_LOG
        }
        ThreadKind::Api => {
            allow(&mut r, &[libc::SYS_accept, libc::SYS_accept4]);
            socket_io(&mut r);
            spawn(&mut r)?; // one api-client thread per client (inherits this filter)
        }
        ThreadKind::Arbiter => {
            socket_io(&mut r);
            connect(&mut r)?; // one connection per member per attempt
        }
        ThreadKind::Metrics => {
            allow(&mut r, &[libc::SYS_accept, libc::SYS_accept4]);
            socket_io(&mut r);
        }
        ThreadKind::Vcpu => {
            kvm(&mut r)?;
            socket_io(&mut r);
            connect(&mut r)?; // vhost-user reconnects, FT control at go-live
            spawn(&mut r)?; // FT threads at joins and go-live (filtered by this one too)
                            // socketpair: the TLS relay of a survivor's joins (its ft-tls-connect thread
                            // is started here at go-live, and keeps this filter under its own).
            allow(&mut r, &[libc::SYS_socketpair]);
            allow(
                &mut r,
                &[
                    libc::SYS_fallocate, // zeroing memory at a state transfer
                    libc::SYS_epoll_ctl,
                    // A snapshot (`persist::file`): create the file (O_EXCL, O_NOFOLLOW),
                    // fsync it, and remove it again if writing failed.
                    libc::SYS_openat,
                    libc::SYS_fsync,
                    libc::SYS_unlink,
                    libc::SYS_unlinkat,
                ],
            );
        }
    }
    Ok(r)
}
