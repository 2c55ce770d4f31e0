//! Network namespaces made by the tests, and running things inside them.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("cannot run `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("cannot enter network namespace {ns}: {source}")]
    Enter { ns: String, source: std::io::Error },
    #[error("cannot connect to {addr} from namespace {ns}: {source}")]
    Connect {
        ns: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Runs a command to completion; an error carries its stderr.
pub fn run(args: &[&str]) -> Result<String, NetnsError> {
    let cmd = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip -n NS ARGS...`.
pub fn ip(ns: &str, args: &[&str]) -> Result<String, NetnsError> {
    let mut full = vec!["ip", "-n", ns];
    full.extend_from_slice(args);
    run(&full)
}

/// `ip netns exec NS` prefix for commands run inside a namespace.
pub fn exec_prefix(ns: &str) -> Vec<String> {
    vec!["ip".into(), "netns".into(), "exec".into(), ns.into()]
}

/// Opens a TCP connection from inside namespace `ns`. A helper thread enters the namespace
/// (setns affects only the calling thread); the socket stays in that namespace.
pub fn connect_from(
    ns: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, NetnsError> {
    let thread_ns = ns.to_string();
    in_ns(ns, move || {
        TcpStream::connect_timeout(&addr, timeout).map_err(|source| NetnsError::Connect {
            ns: thread_ns,
            addr,
            source,
        })
    })?
}

/// Runs `f` on a thread inside namespace `ns`: sockets it creates (a listener, say) stay in
/// that namespace.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let thread_ns = ns.to_string();
    let handle = std::thread::spawn(move || -> Result<T, NetnsError> {
        let file = File::open(format!("/var/run/netns/{thread_ns}")).map_err(|source| {
            NetnsError::Enter {
                ns: thread_ns.clone(),
                source,
            }
        })?;
        // SAFETY: setns on a valid namespace fd; it changes only this short-lived thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NetnsError::Enter {
                ns: thread_ns,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(f())
    });
    handle.join().unwrap_or_else(|_| {
        Err(NetnsError::Enter {
            ns: ns.to_string(),
            source: std::io::Error::other("namespace thread panicked"),
        })
    })
}
