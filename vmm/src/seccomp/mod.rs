//! Seccomp filters, one per thread kind (docs/ARCHITECTURE.md, "Seccomp"). `init` builds
//! them all once at startup, before any thread starts, and installs the SIGSYS handler;
//! each thread calls `enter` with its kind at the start of its closure. A syscall its
//! filter does not allow traps: the handler names the thread and the syscall on stderr
//! and exits with `EXIT_DENIED`. Filters stack (a thread keeps its creator's), so a
//! creator's list includes what its children need (`filters`).

mod filters;
mod handler;

use std::sync::OnceLock;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

pub use handler::EXIT_DENIED;

/// The kinds of VMM threads, each with its own allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread once setup is done (it waits for the vCPU thread).
    Main,
    /// vcpu0: KVM, the devices, vhost-user; it starts the FT threads of joins and go-live.
    Vcpu,
    /// event-loop: epoll, timerfds, the joiner's and the arbiter ask's connections.
    EventLoop,
    /// ft-log-writer, ft-ack-reader, ft-log-reader, ft-control: socket I/O only.
    Ft,
    /// ft-precopy: socket I/O and the KVM dirty log.
    Precopy,
    /// api and its api-client threads.
    Api,
    /// metrics: the `--metrics-listen` endpoint (accept, one request, close).
    Metrics,
    /// ft-arbiter: asks an etcd cluster (`--arbiter etcd://...`) over HTTP.
    Arbiter,
    /// ft-tls-connect: the primary's TLS handshakes; it starts each session's relay thread.
    TlsHandshake,
    /// ft-tls-relay: moves bytes between a TLS session's TCP socket and its Unix pair.
    TlsRelay,
}

const KINDS: [ThreadKind; 10] = [
    ThreadKind::Main,
    ThreadKind::Vcpu,
    ThreadKind::EventLoop,
    ThreadKind::Ft,
    ThreadKind::Precopy,
    ThreadKind::Api,
    ThreadKind::Metrics,
    ThreadKind::Arbiter,
    ThreadKind::TlsHandshake,
    ThreadKind::TlsRelay,
];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: cannot build the {kind:?} filter: {source}")]
    Build {
        kind: ThreadKind,
        source: seccompiler::Error,
    },
    #[error("seccomp: cannot install the SIGSYS handler: {0}")]
    Handler(std::io::Error),
    #[error("seccomp: already initialised")]
    Twice,
}

/// The compiled filters, indexed like `KINDS`. Unset: seccomp is off (`--no-seccomp`, or a
/// library user such as the unit tests that never called `init`).
static FILTERS: OnceLock<Vec<BpfProgram>> = OnceLock::new();

fn compile(kind: ThreadKind, mismatch: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let build = |source: seccompiler::Error| SeccompError::Build { kind, source };
    let rules = filters::rules(kind).map_err(|e| build(e.into()))?;
    let filter = SeccompFilter::new(
        rules,
        mismatch,
        SeccompAction::Allow,
        seccompiler::TargetArch::x86_64,
    )
    .map_err(|e| build(e.into()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| build(e.into()))
}

/// Builds every filter and installs the SIGSYS handler (when `enabled`); call once, before
/// any thread starts, so that a filter that cannot be built is a startup error.
pub fn init(enabled: bool) -> Result<(), SeccompError> {
    if !enabled {
        log::warn!("seccomp is off (--no-seccomp): every thread may make any system call");
        return Ok(());
    }
    let programs = KINDS
        .iter()
        .map(|&k| compile(k, SeccompAction::Trap))
        .collect::<Result<Vec<_>, _>>()?;
    handler::install().map_err(SeccompError::Handler)?;
    FILTERS.set(programs).map_err(|_| SeccompError::Twice)
}

/// Whether `init` turned the filters on.
pub fn enabled() -> bool {
    FILTERS.get().is_some()
}

/// Installs `kind`'s filter on the calling thread (nothing when seccomp is off). A thread
/// that cannot confine itself must not run unconfined: the process exits (status 1).
pub fn enter(kind: ThreadKind) {
    let Some(programs) = FILTERS.get() else {
        return;
    };
    let Some(index) = KINDS.iter().position(|&k| k == kind) else {
        return; // unreachable: KINDS lists every kind
    };
    if let Err(e) = seccompiler::apply_filter(&programs[index]) {
        eprintln!("vmm: error: seccomp: cannot install the {kind:?} filter: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn every_filter_builds() {
        for k in KINDS {
            compile(k, SeccompAction::Trap).expect("filter builds");
        }
    }

    /// In a forked child: a filter that allows everything but getppid, then getppid. The
    /// parent reads the handler's line from a pipe and checks the exit status.
    #[test]
    fn a_denied_syscall_is_named_and_exits_31() {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two fds into the array we own.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
            [(libc::SYS_getppid, vec![])].into_iter().collect();
        // Inverted: the listed syscall traps, everything else is allowed.
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Trap,
            seccompiler::TargetArch::x86_64,
        )
        .expect("filter");
        let program: BpfProgram = filter.try_into().expect("compile");
        handler::install().expect("handler");
        // SAFETY: the child only makes raw syscalls (dup2, prctl, seccomp, getppid) and
        // exits; it does not touch locks another test thread may hold.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: fds[1] is the pipe's write end; stderr becomes it.
            unsafe { libc::dup2(fds[1], 2) };
            let name = c"denied-test";
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
            if seccompiler::apply_filter(&program).is_err() {
                // SAFETY: _exit is always safe to call.
                unsafe { libc::_exit(2) };
            }
            // SAFETY: getppid has no arguments; here it traps.
            unsafe { libc::getppid() };
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: closing our copy of the write end, so that read sees EOF.
        unsafe { libc::close(fds[1]) };
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        let mut out = vec![0u8; 512];
        // SAFETY: reading into a buffer of out.len() bytes.
        let n = unsafe { libc::read(fds[0], out.as_mut_ptr().cast(), out.len()) };
        out.truncate(usize::try_from(n).unwrap_or(0));
        let line = String::from_utf8_lossy(&out);
        assert!(libc::WIFEXITED(status), "status {status}, stderr {line}");
        assert_eq!(libc::WEXITSTATUS(status), EXIT_DENIED, "stderr {line}");
        assert_eq!(
            line,
            format!(
                "vmm: seccomp: thread denied-test made syscall {} (getppid), which its filter does not allow; exiting\n",
                libc::SYS_getppid
            )
        );
    }
}
