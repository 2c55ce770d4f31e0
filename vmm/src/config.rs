//! The VMM's configuration, built from the command line (or by tests directly).

use std::path::PathBuf;
use std::str::FromStr;

/// Where the guest's serial console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialOutput {
    Stdout,
    File(PathBuf),
}

impl FromStr for SerialOutput {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(SerialOutput::Stdout),
            _ => match s.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(SerialOutput::File(PathBuf::from(path))),
                _ => Err(format!("expected `stdout` or `file:PATH`, got `{s}`")),
            },
        }
    }
}

/// `--net socket=PATH[,mac=MAC]`: a virtio-net device served by a vhost-user backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    pub socket: PathBuf,
    pub mac: Option<[u8; 6]>,
    /// The backend's FT control socket (`ft=PATH`), needed in FT mode.
    pub ft: Option<PathBuf>,
}

/// `--block socket=PATH`: a virtio-blk device served by a vhost-user backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    pub socket: PathBuf,
    /// The backend's FT control socket (`ft=PATH`), needed in FT mode.
    pub ft: Option<PathBuf>,
}

/// Fault-tolerance role (`--ft`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FtConfig {
    Off,
    /// Record, and stream the log to a backup at `peer` once it is reachable.
    Primary {
        peer: std::net::SocketAddr,
    },
    /// Wait on `listen` for a primary, take over its state and replay its log. After going
    /// live, look for a new backup at `peer` (re-protection), if given.
    Backup {
        listen: std::net::SocketAddr,
        peer: Option<std::net::SocketAddr>,
    },
}

/// How an FT pair detects a failure and decides who goes live (`--arbiter`, `--vm-id`,
/// `--node`, `--ft-timeout-ms`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverConfig {
    /// The arbiter's address (HOST:PORT); required in FT mode.
    pub arbiter: Option<String>,
    /// The flag's name at the arbiter: the same for primary and backup of one VM.
    pub vm_id: String,
    /// This VMM's name at the arbiter (the flag's owner when it wins).
    pub node: String,
    /// Silence on the logging channel for this long means the peer is gone.
    pub timeout: std::time::Duration,
    /// The longest the guest should pause at the end of a pre-copy join (`--ft-join-pause-ms`).
    pub join_pause: std::time::Duration,
    /// `--ft-tls-dir`/`--ft-peer-name`, or `--ft-insecure`: how the logging channel is secured.
    pub security: crate::ft::link::LinkSecurity,
    /// `--arbiter-name`: the name the arbiter's certificate must carry (with TLS; None:
    /// the host part of `arbiter`).
    pub arbiter_name: Option<ft_tls::PeerName>,
}

/// Default failure-detection timeout: six heartbeat periods (ft::channel::HEARTBEAT).
pub const DEFAULT_FT_TIMEOUT_MS: u64 = 300;
pub const DEFAULT_VM_ID: &str = "ft-vm";
/// Default pause budget of a join: pre-copy rounds go on until the rest fits in it.
pub const DEFAULT_JOIN_PAUSE_MS: u64 = 50;

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            arbiter: None,
            vm_id: DEFAULT_VM_ID.into(),
            node: format!("vmm-{}", std::process::id()),
            timeout: std::time::Duration::from_millis(DEFAULT_FT_TIMEOUT_MS),
            join_pause: std::time::Duration::from_millis(DEFAULT_JOIN_PAUSE_MS),
            security: crate::ft::link::LinkSecurity::Insecure,
            arbiter_name: None,
        }
    }
}

/// Splits `k=v,k=v` into pairs, refusing keys not in `allowed`.
fn key_values<'a>(s: &'a str, allowed: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    s.split(',')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got `{kv}`"))?;
            if !allowed.contains(&k) {
                return Err(format!(
                    "unknown key `{k}` (expected one of: {})",
                    allowed.join(", ")
                ));
            }
            Ok((k, v))
        })
        .collect()
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).map_err(|_| format!("invalid MAC address `{s}`")))
        .collect::<Result<_, _>>()?;
    <[u8; 6]>::try_from(bytes).map_err(|_| format!("invalid MAC address `{s}`"))
}

impl FromStr for NetConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut socket, mut mac, mut ft) = (None, None, None);
        for (k, v) in key_values(s, &["socket", "mac", "ft"])? {
            match k {
                "socket" => socket = Some(PathBuf::from(v)),
                "ft" => ft = Some(PathBuf::from(v)),
                _ => mac = Some(parse_mac(v)?),
            }
        }
        Ok(NetConfig {
            socket: socket.ok_or("missing socket=PATH")?,
            mac,
            ft,
        })
    }
}

impl FromStr for BlockConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut socket, mut ft) = (None, None);
        for (k, v) in key_values(s, &["socket", "ft"])? {
            match k {
                "socket" => socket = Some(PathBuf::from(v)),
                _ => ft = Some(PathBuf::from(v)),
            }
        }
        Ok(BlockConfig {
            socket: socket.ok_or("missing socket=PATH")?,
            ft,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub mem_mib: u64,
    pub serial: SerialOutput,
    pub net: Option<NetConfig>,
    pub block: Option<BlockConfig>,
    /// Control socket (crate::api).
    pub api_sock: Option<PathBuf>,
    /// `--socket-group`: the control socket is mode 0660 with this group (else 0600).
    pub socket_group: Option<u32>,
    /// `--metrics-listen`: where Prometheus scrapes `GET /metrics` (crate::metrics).
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub ft: FtConfig,
    pub failover: FailoverConfig,
}

pub const DEFAULT_MEM_MIB: u64 = 128;
/// `console=ttyS0` makes a Linux guest use COM1; the test guest ignores it.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_output_parses() {
        assert_eq!("stdout".parse::<SerialOutput>(), Ok(SerialOutput::Stdout));
        assert_eq!(
            "file:/tmp/x".parse::<SerialOutput>(),
            Ok(SerialOutput::File("/tmp/x".into()))
        );
        assert!("file:".parse::<SerialOutput>().is_err());
        assert!("tty".parse::<SerialOutput>().is_err());
    }

    #[test]
    fn device_options_parse() {
        let net: NetConfig = "socket=/run/net.sock,mac=52:54:00:12:34:56"
            .parse()
            .expect("net");
        assert_eq!(net.socket, PathBuf::from("/run/net.sock"));
        assert_eq!(net.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert!(
            "mac=52:54:00:12:34:56".parse::<NetConfig>().is_err(),
            "socket is required"
        );
        assert!("socket=/x,mac=52:54".parse::<NetConfig>().is_err());
        assert!("socket=/x,speed=10".parse::<NetConfig>().is_err());
        let blk: BlockConfig = "socket=/run/blk.sock".parse().expect("block");
        assert_eq!(blk.socket, PathBuf::from("/run/blk.sock"));
        assert!("/run/blk.sock".parse::<BlockConfig>().is_err());
    }
}
