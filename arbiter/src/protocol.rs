//! Wire protocol: one JSON object per line in each direction (docs/PROTOCOL.md, "Arbiter").

use serde::{Deserialize, Serialize};

/// Longest request line accepted, without the newline. A longer line closes the connection.
pub const MAX_LINE: usize = 4096;
/// Longest vm id and owner, in bytes.
pub const MAX_ID: usize = 64;

/// A request as sent by a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Set the flag for (vm, epoch) to owner unless it is already set to someone else.
    TestAndSet {
        vm: String,
        epoch: u64,
        owner: String,
    },
    /// All decided flags.
    Status,
}

/// One decided flag: the highest epoch decided for a vm and who won it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    pub vm: String,
    pub epoch: u64,
    pub owner: String,
    /// When the grant was made durable, milliseconds since the Unix epoch (UTC).
    pub granted_at_unix_ms: u64,
}

/// Answer to a test-and-set. `owner`/`epoch` are the flag as it now stands: the requested
/// epoch when granted or refused for that epoch, the higher decided epoch when `stale`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub granted: bool,
    pub owner: String,
    pub epoch: u64,
    /// Refused because a higher epoch was already decided for this vm.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stale: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A reply line. Serialized without a tag; `ok` tells success from error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Decision {
        ok: bool,
        #[serde(flatten)]
        decision: Decision,
    },
    Status {
        ok: bool,
        flags: Vec<Flag>,
    },
    Error {
        ok: bool,
        error: String,
    },
}

impl Reply {
    pub fn decision(decision: Decision) -> Self {
        Reply::Decision { ok: true, decision }
    }
    pub fn status(flags: Vec<Flag>) -> Self {
        Reply::Status { ok: true, flags }
    }
    pub fn error(error: impl Into<String>) -> Self {
        Reply::Error {
            ok: false,
            error: error.into(),
        }
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> String {
        // Serializing these plain structs cannot fail; still, never panic on the serving path.
        let mut s = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                "{{\"ok\":false,\"error\":{:?}}}",
                format!("internal: cannot encode reply: {e}")
            )
        });
        s.push('\n');
        s
    }
}

/// Parse and validate one request line (without its newline). The error is the text for
/// the `error` field of the reply.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|_| "bad request: not UTF-8".to_string())?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}"))?;
    if !value.is_object() {
        return Err("bad request: expected a JSON object".into());
    }
    let req: Request = serde_json::from_value(value).map_err(|e| format!("bad request: {e}"))?;
    if let Request::TestAndSet { vm, owner, .. } = &req {
        validate_vm(vm)?;
        validate_owner(owner)?;
    }
    Ok(req)
}

/// A vm id: 1..=64 bytes of [A-Za-z0-9._-] (safe in logs, tables and file names).
pub fn validate_vm(vm: &str) -> Result<(), String> {
    if vm.is_empty() || vm.len() > MAX_ID {
        return Err(format!("bad request: vm id must be 1..={MAX_ID} bytes"));
    }
    if !vm
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("bad request: vm id may only contain [A-Za-z0-9._-]".into());
    }
    Ok(())
}

/// An owner: 1..=64 bytes, no control characters (it is printed in the status table).
pub fn validate_owner(owner: &str) -> Result<(), String> {
    if owner.is_empty() || owner.len() > MAX_ID {
        return Err(format!("bad request: owner must be 1..={MAX_ID} bytes"));
    }
    if owner.chars().any(char::is_control) {
        return Err("bad request: owner may not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        match parse_request(line.as_bytes()) {
            Ok(r) => panic!("{line:?} was accepted as {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_valid_requests() {
        assert_eq!(
            parse_request(br#"{"op":"test_and_set","vm":"ft-vm","epoch":1,"owner":"host-a"}"#),
            Ok(Request::TestAndSet {
                vm: "ft-vm".into(),
                epoch: 1,
                owner: "host-a".into()
            })
        );
        assert_eq!(parse_request(br#"{"op":"status"}"#), Ok(Request::Status));
    }

    #[test]
    fn rejects_malformed_requests() {
        assert!(err("{not json").starts_with("bad JSON"));
        assert!(err("").starts_with("bad JSON"));
        assert!(err("[1,2]").contains("JSON object"));
        assert!(err(r#"{"op":"frobnicate"}"#).contains("unknown variant"));
        assert!(err(r#"{"vm":"a","epoch":1,"owner":"b"}"#).contains("op"));
        assert!(
            err(r#"{"op":"test_and_set","epoch":1,"owner":"b"}"#).contains("missing field `vm`")
        );
        assert!(
            err(r#"{"op":"test_and_set","vm":"a","owner":"b"}"#).contains("missing field `epoch`")
        );
        assert!(
            err(r#"{"op":"test_and_set","vm":"a","epoch":1}"#).contains("missing field `owner`")
        );
        assert!(
            err(r#"{"op":"test_and_set","vm":"a","epoch":-1,"owner":"b"}"#).contains("bad request")
        );
        assert!(
            err(r#"{"op":"test_and_set","vm":"a","epoch":"1","owner":"b"}"#)
                .contains("bad request")
        );
        assert!(parse_request(b"\xff\xfe").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn validates_vm_and_owner() {
        let tas = |vm: &str, owner: &str| {
            parse_request(
                serde_json::json!({"op":"test_and_set","vm":vm,"epoch":1,"owner":owner})
                    .to_string()
                    .as_bytes(),
            )
        };
        assert!(tas(&"v".repeat(64), &"o".repeat(64)).is_ok());
        assert!(tas("A.z_0-9", "host a/ü").is_ok());
        assert!(tas(&"v".repeat(65), "o").unwrap_err().contains("vm id"));
        assert!(tas("", "o").unwrap_err().contains("vm id"));
        assert!(tas("a/b", "o").unwrap_err().contains("vm id"));
        assert!(tas("a b", "o").unwrap_err().contains("vm id"));
        assert!(tas("é", "o").unwrap_err().contains("vm id"));
        assert!(tas("vm", &"o".repeat(65)).unwrap_err().contains("owner"));
        // 64 bytes is the limit, not 64 characters.
        assert!(tas("vm", &"ü".repeat(33)).unwrap_err().contains("owner"));
        assert!(tas("vm", "").unwrap_err().contains("owner"));
        assert!(tas("vm", "a\nb").unwrap_err().contains("owner"));
    }

    #[test]
    fn reply_lines() {
        let d = Decision {
            granted: true,
            owner: "host-a".into(),
            epoch: 1,
            stale: false,
        };
        assert_eq!(
            Reply::decision(d).to_line(),
            "{\"ok\":true,\"granted\":true,\"owner\":\"host-a\",\"epoch\":1}\n"
        );
        let d = Decision {
            granted: false,
            owner: "host-b".into(),
            epoch: 7,
            stale: true,
        };
        assert_eq!(
            Reply::decision(d).to_line(),
            "{\"ok\":true,\"granted\":false,\"owner\":\"host-b\",\"epoch\":7,\"stale\":true}\n"
        );
        assert_eq!(
            Reply::error("x").to_line(),
            "{\"ok\":false,\"error\":\"x\"}\n"
        );
        assert_eq!(
            Reply::status(vec![]).to_line(),
            "{\"ok\":true,\"flags\":[]}\n"
        );
    }
}
