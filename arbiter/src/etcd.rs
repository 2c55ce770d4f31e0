//! The arbiter on etcd (`--arbiter etcd://HOST:PORT[,HOST:PORT...]`): the test-and-set of
//! (vm, epoch) as one etcd v3 transaction, sent to etcd's JSON gateway (etcd 3.4 and later:
//! `POST /v3/kv/txn`, keys and values base64-encoded; etcd's "gRPC gateway" docs):
//!
//! ```text
//! if create_revision(KEY) == 0 then put(KEY, node) else range(KEY)
//! ```
//!
//! where KEY is [`KEY_PREFIX`]`<vm>/<epoch>`. The transaction is linearizable (Raft), so of
//! two sides asking at once exactly one creates the key. No lease is attached: a flag, once
//! set, is never removed by a timeout. A retry after a lost reply finds its own name in the
//! key and counts as the win it was. Members are tried in turn; an error from one (down,
//! no leader, a timeout) moves on to the next, and only an answer decides.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::protocol::Decision;

/// Where the flags live: `/ftvm/arbiter/<vm>/<epoch>`, value = the owner's name.
pub const KEY_PREFIX: &str = "/ftvm/arbiter/";
/// The longest reply read from a member (a txn answer is a few hundred bytes).
const MAX_REPLY: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("bad etcd arbiter URL {url:?}: {why} (expected etcd://HOST:PORT[,HOST:PORT...])")]
    BadUrl { url: String, why: &'static str },
    #[error("no etcd member answered: {0}")]
    Unreachable(String),
    #[error("etcd member {member} answered with an error: {message}")]
    Refused { member: String, message: String },
    #[error("etcd member {member} sent a reply this client cannot read: {why}")]
    BadReply { member: String, why: String },
}

/// The members of one etcd cluster, and how long each may take to answer.
#[derive(Clone, Debug)]
pub struct EtcdCluster {
    members: Vec<String>,
    timeout: Duration,
}

impl EtcdCluster {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...]`.
    pub fn parse(url: &str, timeout: Duration) -> Result<Self, EtcdError> {
        let bad = |why| EtcdError::BadUrl {
            url: url.into(),
            why,
        };
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("not etcd://"))?;
        let members: Vec<String> = rest.split(',').map(str::to_string).collect();
        for m in &members {
            let (host, port) = m
                .rsplit_once(':')
                .ok_or_else(|| bad("a member without :PORT"))?;
            if host.is_empty() || host.contains('/') {
                return Err(bad("a member without a host"));
            }
            port.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("a port that is not 1-65535"))?;
        }
        Ok(EtcdCluster { members, timeout })
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The key of the flag for (`vm`, `epoch`).
    pub fn key(vm: &str, epoch: u64) -> String {
        format!("{KEY_PREFIX}{vm}/{epoch}")
    }

    /// Asks each member in turn until one answers: `Decision` as the built-in arbiter gives
    /// it (`granted` when the flag is, or already was, `node`'s).
    pub fn test_and_set(&self, vm: &str, epoch: u64, node: &str) -> Result<Decision, EtcdError> {
        let key = B64.encode(Self::key(vm, epoch));
        let body = json!({
            "compare": [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": B64.encode(node)}}],
            "failure": [{"request_range": {"key": key}}],
        });
        let mut failures = Vec::new();
        for member in &self.members {
            match self
                .txn(member, &body)
                .and_then(|r| decision(member, &r, epoch, node))
            {
                Ok(d) => return Ok(d),
                // A member that is down, has no leader or times out: the next one. A
                // request that timed out may still take effect later (etcd commits it once
                // a quorum is back); the retry then finds this node's name and wins.
                Err(EtcdError::Unreachable(why)) => failures.push(why),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }

    fn txn(&self, member: &str, body: &Value) -> Result<Value, EtcdError> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(self.timeout)
            .timeout(self.timeout)
            .build();
        let url = format!("http://{member}/v3/kv/txn");
        let reply = match agent.post(&url).send_json(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let text = read_bounded(r).unwrap_or_default();
                return Err(EtcdError::Refused {
                    member: member.into(),
                    message: format!("HTTP {code}: {}", text.trim()),
                });
            }
            Err(e) => return Err(EtcdError::Unreachable(format!("{member}: {e}"))),
        };
        let text = read_bounded(reply).map_err(|why| EtcdError::BadReply {
            member: member.into(),
            why,
        })?;
        serde_json::from_str(&text).map_err(|e| EtcdError::BadReply {
            member: member.into(),
            why: e.to_string(),
        })
    }
}

fn read_bounded(reply: ureq::Response) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    reply
        .into_reader()
        .take(MAX_REPLY)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// The transaction's answer as a decision: created (`succeeded`), or the owner in the key.
fn decision(member: &str, reply: &Value, epoch: u64, node: &str) -> Result<Decision, EtcdError> {
    let bad = |why: &str| EtcdError::BadReply {
        member: member.into(),
        why: why.into(),
    };
    if let Some(message) = reply["error"].as_str().or(reply["message"].as_str()) {
        return Err(EtcdError::Refused {
            member: member.into(),
            message: message.into(),
        });
    }
    if reply["header"].is_null() {
        return Err(bad("no header"));
    }
    // The gateway leaves out fields with default values: `succeeded` is absent when false.
    if reply["succeeded"].as_bool() == Some(true) {
        return Ok(Decision {
            granted: true,
            owner: node.into(),
            epoch,
            stale: false,
        });
    }
    let value = reply["responses"][0]["response_range"]["kvs"][0]["value"]
        .as_str()
        .ok_or_else(|| bad("neither created nor holding the key"))?;
    let owner = B64
        .decode(value)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| bad("the owner is not base64 UTF-8"))?;
    Ok(Decision {
        granted: owner == node,
        owner,
        epoch,
        stale: false,
    })
}
