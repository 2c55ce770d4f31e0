//! The SIGSYS handler: a syscall a filter does not allow (SECCOMP_RET_TRAP) ends the
//! process with one line on stderr naming the thread and the syscall. Async-signal-safe:
//! it formats into a stack buffer and makes raw syscalls only (prctl PR_GET_NAME, write,
//! _exit), which every filter allows.

/// Exit status of a VMM killed by its seccomp filter (31 = SIGSYS's number).
pub const EXIT_DENIED: i32 = 31;

/// Offset of `si_syscall` in `siginfo_t` on x86_64: after si_signo, si_errno, si_code and
/// padding (16 bytes) comes the SIGSYS member of the union: `void *_call_addr` (8 bytes),
/// then `int _syscall`. The libc crate has no accessor for it.
const SI_SYSCALL_OFFSET: usize = 24;

/// Names of the syscalls a thread may plausibly make (the allowlists' and the usual
/// suspects); another number is printed without a name.
macro_rules! names {
    ($($name:ident),* $(,)?) => {
        fn name(nr: i64) -> &'static str {
            $(if nr == paste_sys!($name) { return stringify!($name); })*
            "unknown"
        }
    };
}
macro_rules! paste_sys {
    ($name:ident) => {
        sys::$name
    };
}
#[allow(non_upper_case_globals)]
mod sys {
    pub use libc::{
        SYS_accept as accept, SYS_accept4 as accept4, SYS_bind as bind, SYS_brk as brk,
        SYS_clone as clone, SYS_clone3 as clone3, SYS_close as close, SYS_connect as connect,
        SYS_dup as dup, SYS_dup2 as dup2, SYS_dup3 as dup3, SYS_epoll_create1 as epoll_create1,
        SYS_epoll_ctl as epoll_ctl, SYS_epoll_pwait as epoll_pwait, SYS_epoll_wait as epoll_wait,
        SYS_eventfd2 as eventfd2, SYS_execve as execve, SYS_execveat as execveat, SYS_exit as exit,
        SYS_exit_group as exit_group, SYS_fallocate as fallocate, SYS_fcntl as fcntl,
        SYS_fork as fork, SYS_fstat as fstat, SYS_ftruncate as ftruncate, SYS_futex as futex,
        SYS_getdents64 as getdents64, SYS_getpid as getpid, SYS_getppid as getppid,
        SYS_getrandom as getrandom, SYS_getsockname as getsockname, SYS_getsockopt as getsockopt,
        SYS_gettid as gettid, SYS_ioctl as ioctl, SYS_kill as kill, SYS_listen as listen,
        SYS_lseek as lseek, SYS_madvise as madvise, SYS_memfd_create as memfd_create,
        SYS_mmap as mmap, SYS_mprotect as mprotect, SYS_mremap as mremap, SYS_munmap as munmap,
        SYS_nanosleep as nanosleep, SYS_newfstatat as newfstatat, SYS_open as open,
        SYS_openat as openat, SYS_pipe2 as pipe2, SYS_poll as poll, SYS_ppoll as ppoll,
        SYS_prctl as prctl, SYS_pread64 as pread64, SYS_ptrace as ptrace, SYS_pwrite64 as pwrite64,
        SYS_read as read, SYS_readv as readv, SYS_recvfrom as recvfrom, SYS_recvmsg as recvmsg,
        SYS_rseq as rseq, SYS_rt_sigaction as rt_sigaction, SYS_rt_sigprocmask as rt_sigprocmask,
        SYS_sched_getaffinity as sched_getaffinity, SYS_sched_yield as sched_yield,
        SYS_seccomp as seccomp, SYS_sendmsg as sendmsg, SYS_sendto as sendto,
        SYS_set_robust_list as set_robust_list, SYS_setsockopt as setsockopt,
        SYS_shutdown as shutdown, SYS_sigaltstack as sigaltstack, SYS_socket as socket,
        SYS_statx as statx, SYS_tgkill as tgkill, SYS_timerfd_create as timerfd_create,
        SYS_timerfd_settime as timerfd_settime, SYS_unlink as unlink, SYS_unlinkat as unlinkat,
        SYS_vfork as vfork, SYS_write as write, SYS_writev as writev,
    };
}
names!(
    accept,
    accept4,
    bind,
    brk,
    clone,
    clone3,
    close,
    connect,
    dup,
    dup2,
    dup3,
    epoll_create1,
    epoll_ctl,
    epoll_pwait,
    epoll_wait,
    eventfd2,
    execve,
    execveat,
    exit,
    exit_group,
    fallocate,
    fcntl,
    fork,
    fstat,
    ftruncate,
    futex,
    getdents64,
    getpid,
    getppid,
    getrandom,
    getsockname,
    getsockopt,
    gettid,
    ioctl,
    kill,
    listen,
    lseek,
    madvise,
    memfd_create,
    mmap,
    mprotect,
    mremap,
    munmap,
    nanosleep,
    newfstatat,
    open,
    openat,
    pipe2,
    poll,
    ppoll,
    prctl,
    pread64,
    ptrace,
    pwrite64,
    read,
    readv,
    recvfrom,
    recvmsg,
    rseq,
    rt_sigaction,
    rt_sigprocmask,
    sched_getaffinity,
    sched_yield,
    seccomp,
    sendmsg,
    sendto,
    set_robust_list,
    setsockopt,
    shutdown,
    sigaltstack,
    socket,
    statx,
    tgkill,
    timerfd_create,
    timerfd_settime,
    unlink,
    unlinkat,
    vfork,
    write,
    writev,
);

/// A fixed buffer the message is formatted into (no allocation in a signal handler).
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn push_number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

extern "C" fn on_sigsys(_signal: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers; for SIGSYS from
    // seccomp its union holds the syscall number at SI_SYSCALL_OFFSET (see the constant).
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    let mut thread = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL-terminated) into the 17-byte buffer.
    unsafe { libc::prctl(libc::PR_GET_NAME, thread.as_mut_ptr()) };
    let thread_len = thread.iter().position(|&b| b == 0).unwrap_or(16);
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    line.push(b"vmm: seccomp: thread ");
    line.push(&thread[..thread_len]);
    line.push(b" made syscall ");
    line.push_number(u64::from(nr.unsigned_abs()));
    line.push(b" (");
    line.push(name(i64::from(nr)).as_bytes());
    line.push(b"), which its filter does not allow; exiting\n");
    // SAFETY: write from a buffer of line.len valid bytes; _exit ends the process without
    // running anything that is not async-signal-safe.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::_exit(EXIT_DENIED);
    }
}

/// Installs `on_sigsys` for SIGSYS (process-wide).
pub fn install() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid starting point; we set the handler, SA_SIGINFO
    // and an empty mask, and pass pointers to it that live for the call.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
