//! The control socket (`--api-sock PATH`): one JSON object per line in each direction.
//! Documented in docs/PROTOCOL.md ("Control socket"). Requests are forwarded to the vCPU
//! thread through the inbox, so they take effect at a landmark like every other event.
//!
//! | request | reply |
//! | --- | --- |
//! | `{"cmd":"status"}` | `{"ok":true,"state":"running"/"paused","landmark":N,...}` |
//! | `{"cmd":"pause"}` / `{"cmd":"pause","landmark":N}` | `{"ok":true,...}` once paused at N (or at the next landmark) |
//! | `{"cmd":"resume"}` | `{"ok":true}` |
//! | `{"cmd":"digest"}` (paused only) | `{"ok":true,"landmark":N,"memory":"<sha256>","vcpu":"<sha256>"}` |
//! | `{"cmd":"snapshot","path":"/abs/file"}` (paused only) | `{"ok":true,"landmark":N,"path":"...","bytes":B}`; the file is new (never overwritten), mode 0600 (persist::file; read it with `vmm --snapshot-info FILE`) |
//! | `{"cmd":"protect","peer":"HOST:PORT"}` (FT primary) | `{"ok":true}`; the joiner looks for a backup there |
//! Errors: `{"ok":false,"error":"..."}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::inbox::{DeviceEvent, Inbox};

/// The requests, and the typed replies the vCPU thread builds, are `vmm_api`'s: the same
/// types `ftctl` and the tests use.
pub use vmm_api::{Request as ApiRequest, MAX_LINE};

/// A request on its way to the vCPU thread, with the channel for its reply.
#[derive(Debug)]
pub struct ApiCall {
    pub request: ApiRequest,
    pub reply: mpsc::Sender<Value>,
}

/// How long a client waits for the vCPU thread (a pause at a far landmark may take long).
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The rules of `ft_control::local`: mode 0600, only a stale socket of ours replaced.
    #[error("cannot listen on the API socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: ft_control::local::SocketError,
    },
    #[error("cannot start the API thread: {0}")]
    Spawn(std::io::Error),
}

pub fn error_reply(msg: impl std::fmt::Display) -> Value {
    json!({"ok": false, "error": msg.to_string()})
}

/// `{"ok":true,...}` with the fields of `body` (a typed reply of `vmm_api`).
pub fn ok_reply(body: &impl serde::Serialize) -> Value {
    match serde_json::to_value(body) {
        Ok(Value::Object(mut fields)) => {
            fields.insert("ok".into(), Value::Bool(true));
            Value::Object(fields)
        }
        _ => error_reply("internal error: a reply that is not a JSON object"),
    }
}

/// Parses one request line; the error is the reply to send.
pub fn parse_request(line: &str) -> Result<ApiRequest, Value> {
    serde_json::from_str(line).map_err(|e| error_reply(format!("bad request: {e}")))
}

/// One request line read from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Text(String),
    /// Over `MAX_LINE` bytes without a newline: refused, and the connection is closed.
    TooLong,
    Eof,
}

/// Reads up to the next newline, never more than `MAX_LINE` + 1 bytes.
pub fn read_line<R: BufRead>(reader: &mut R) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let mut limited = std::io::Read::take(reader, MAX_LINE as u64 + 1);
    let n = limited.read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
        return Ok(Line::TooLong);
    }
    Ok(Line::Text(String::from_utf8_lossy(&buf).into_owned()))
}

fn serve_client(stream: UnixStream, inbox: &Inbox) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let line = match read_line(&mut reader)? {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                let reply = error_reply(format!("request longer than {MAX_LINE} bytes"));
                return writer.write_all(format!("{reply}\n").as_bytes());
            }
            Line::Text(line) => line,
        };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match parse_request(&line) {
            Err(reply) => reply,
            Ok(request) => {
                let (tx, rx) = mpsc::channel();
                inbox.post(DeviceEvent::Api(ApiCall { request, reply: tx }));
                rx.recv_timeout(REPLY_TIMEOUT)
                    .unwrap_or_else(|_| error_reply("the vCPU did not answer"))
            }
        };
        writer.write_all(format!("{reply}\n").as_bytes())?;
    }
}

/// Binds the control socket at `path`, mode 0600 (only its owner may control the VM), or
/// 0660 with `group` (`--socket-group`). A stale socket of ours there is replaced; anything
/// else there (a file, a symlink, another user's socket) is refused (`ft_control::local::bind`).
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, ApiError> {
    ft_control::local::bind(path, group).map_err(|source| ApiError::Bind {
        path: path.to_path_buf(),
        source,
    })
}

/// Starts the API thread listening on `path` (see `bind`).
pub fn spawn(path: &Path, group: Option<u32>, inbox: Arc<Inbox>) -> Result<(), ApiError> {
    let listener = bind(path, group)?;
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            crate::seccomp::enter(crate::seccomp::ThreadKind::Api);
            for stream in listener.incoming() {
                match stream {
                    // One thread per client: a client waiting for a pause must not block others.
                    Ok(s) => {
                        let inbox = inbox.clone();
                        let spawned = std::thread::Builder::new().name("api-client".into()).spawn(
                            move || {
                                if let Err(e) = serve_client(s, &inbox) {
                                    log::debug!("api client: {e}");
                                }
                            },
                        );
                        if let Err(e) = spawned {
                            log::warn!("api: cannot start a client thread: {e}");
                        }
                    }
                    Err(e) => log::warn!("api accept: {e}"),
                }
            }
        })
        .map_err(ApiError::Spawn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse_request(r#"{"cmd":"status"}"#), Ok(ApiRequest::Status));
        assert_eq!(
            parse_request(r#"{"cmd":"pause"}"#),
            Ok(ApiRequest::Pause { landmark: None })
        );
        assert_eq!(
            parse_request(r#"{"cmd":"pause","landmark":42}"#),
            Ok(ApiRequest::Pause { landmark: Some(42) })
        );
        assert_eq!(parse_request(r#"{"cmd":"resume"}"#), Ok(ApiRequest::Resume));
        assert_eq!(parse_request(r#"{"cmd":"digest"}"#), Ok(ApiRequest::Digest));
        assert_eq!(
            parse_request(r#"{"cmd":"snapshot","path":"/tmp/vm.snap"}"#),
            Ok(ApiRequest::Snapshot {
                path: "/tmp/vm.snap".into()
            })
        );
        assert_eq!(
            parse_request(r#"{"cmd":"protect","peer":"10.78.0.5:7001"}"#),
            Ok(ApiRequest::Protect {
                peer: "10.78.0.5:7001".parse().expect("addr")
            })
        );
    }

    #[test]
    fn lines_are_bounded() {
        let mut r = std::io::Cursor::new(b"{\"cmd\":\"status\"}\nrest".to_vec());
        assert_eq!(
            read_line(&mut r).expect("read"),
            Line::Text("{\"cmd\":\"status\"}\n".into())
        );
        assert_eq!(read_line(&mut r).expect("read"), Line::Text("rest".into()));
        assert_eq!(read_line(&mut r).expect("read"), Line::Eof);
        let mut exact = vec![b' '; MAX_LINE - 1];
        exact.push(b'\n');
        let mut r = std::io::Cursor::new(exact);
        assert!(matches!(read_line(&mut r).expect("read"), Line::Text(_)));
        let mut r = std::io::Cursor::new(vec![b'x'; 256 << 20]);
        assert_eq!(read_line(&mut r).expect("read"), Line::TooLong);
        assert!(r.position() <= MAX_LINE as u64 + 1, "read only the bound");
    }

    #[test]
    fn the_socket_is_private_and_only_a_stale_socket_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("api.sock");
        drop(bind(&path, None).expect("bind"));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // --socket-group: 0660 and that group (our own, which we may always give a file).
        // SAFETY: getegid has no preconditions.
        let gid = unsafe { libc::getegid() };
        drop(bind(&path, Some(gid)).expect("bind with a group"));
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
        drop(bind(&path, None).expect("a stale socket is replaced"));
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, b"keep me").expect("write");
        use ft_control::local::SocketError;
        assert!(matches!(
            bind(&file, None),
            Err(ApiError::Bind {
                source: SocketError::NotASocket(_),
                ..
            })
        ));
        assert_eq!(std::fs::read(&file).expect("read"), b"keep me");
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert!(matches!(
            bind(&link, None),
            Err(ApiError::Bind {
                source: SocketError::Symlink(_),
                ..
            })
        ));
    }

    #[test]
    fn bad_requests_get_an_error_reply() {
        for bad in [
            "",
            "{",
            r#"{"cmd":"reboot"}"#,
            r#"{"cmd":"pause","landmark":"x"}"#,
            r#"{"cmd":"protect","peer":"nowhere"}"#,
            r#"{"cmd":"snapshot"}"#,
        ] {
            let reply = parse_request(bad).expect_err(bad);
            assert_eq!(reply["ok"], json!(false), "{bad}");
            assert!(
                reply["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("bad request")),
                "{bad}: {reply}"
            );
        }
    }
}
