//! Parsing of NBD URIs (the syntax of the NBD project's doc/uri.md).
//!
//! Supported forms:
//! - `nbd://host[:port][/export]` (TCP, default port 10809; IPv6 hosts in brackets)
//! - `nbd+unix:///export?socket=PATH` (Unix domain socket; the export may be empty)
//!
//! TLS variants (`nbds://`, `nbds+unix://`) are rejected: this client does not speak TLS.

use std::fmt;
use std::path::PathBuf;

use super::NbdError;

/// Default TCP port of the NBD protocol (IANA).
pub const DEFAULT_PORT: u16 = 10809;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// TCP host (name or IP literal without brackets) and port.
    Tcp { host: String, port: u16 },
    /// Path of a Unix domain socket.
    Unix(PathBuf),
}

/// A parsed NBD URI: a server address and an export name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdUri {
    pub address: Address,
    pub export: String,
}

impl fmt::Display for NbdUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            Address::Tcp { host, port } if host.contains(':') => {
                write!(f, "nbd://[{host}]:{port}/{}", self.export)
            }
            Address::Tcp { host, port } => write!(f, "nbd://{host}:{port}/{}", self.export),
            Address::Unix(p) => write!(f, "nbd+unix:///{}?socket={}", self.export, p.display()),
        }
    }
}

fn invalid(uri: &str, reason: impl Into<String>) -> NbdError {
    NbdError::InvalidUri {
        uri: uri.to_string(),
        reason: reason.into(),
    }
}

/// Decodes `%XX` escapes.
fn percent_decode(uri: &str, s: &str) -> Result<String, NbdError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid(uri, "bad percent escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(uri, "escaped bytes are not UTF-8"))
}

impl NbdUri {
    /// Parses an NBD URI.
    pub fn parse(uri: &str) -> Result<Self, NbdError> {
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| invalid(uri, "missing scheme"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let export = percent_decode(uri, path)?;
        let mut socket = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "socket" => socket = Some(PathBuf::from(percent_decode(uri, v)?)),
                // Query parameters we do not understand are ignored, as uri.md allows.
                _ => log::debug!("ignoring NBD URI parameter {k:?}"),
            }
        }
        let address = match scheme {
            "nbd" => {
                if socket.is_some() {
                    return Err(invalid(uri, "socket= is only valid with nbd+unix://"));
                }
                Self::parse_authority(uri, authority)?
            }
            "nbd+unix" => {
                if !authority.is_empty() {
                    return Err(invalid(uri, "nbd+unix:// must not name a host"));
                }
                Address::Unix(socket.ok_or_else(|| invalid(uri, "missing ?socket=PATH"))?)
            }
            "nbds" | "nbds+unix" => return Err(invalid(uri, "TLS is not supported")),
            other => return Err(invalid(uri, format!("unsupported scheme {other:?}"))),
        };
        Ok(NbdUri { address, export })
    }

    fn parse_authority(uri: &str, authority: &str) -> Result<Address, NbdError> {
        if authority.is_empty() {
            return Err(invalid(uri, "missing host"));
        }
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| invalid(uri, "unterminated IPv6 literal"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| invalid(uri, "junk after IPv6 literal"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid(uri, "missing host"));
        }
        let port = match port {
            None | Some("") => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| invalid(uri, format!("bad port {p:?}")))?,
        };
        Ok(Address::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, export: &str) -> NbdUri {
        NbdUri {
            address: Address::Tcp {
                host: host.into(),
                port,
            },
            export: export.into(),
        }
    }

    #[test]
    fn tcp_forms() {
        assert_eq!(NbdUri::parse("nbd://h").unwrap(), tcp("h", 10809, ""));
        assert_eq!(NbdUri::parse("nbd://h/").unwrap(), tcp("h", 10809, ""));
        assert_eq!(
            NbdUri::parse("nbd://127.0.0.1:1234/disk").unwrap(),
            tcp("127.0.0.1", 1234, "disk")
        );
        assert_eq!(
            NbdUri::parse("nbd://[::1]:99/a%20b").unwrap(),
            tcp("::1", 99, "a b")
        );
        assert_eq!(
            NbdUri::parse("nbd://[::1]/x").unwrap(),
            tcp("::1", 10809, "x")
        );
    }

    #[test]
    fn unix_forms() {
        let u = NbdUri::parse("nbd+unix:///exp?socket=/tmp/s.sock").unwrap();
        assert_eq!(u.address, Address::Unix("/tmp/s.sock".into()));
        assert_eq!(u.export, "exp");
        let u = NbdUri::parse("nbd+unix://?socket=/tmp/s").unwrap();
        assert_eq!(u.export, "");
    }

    #[test]
    fn rejects_bad() {
        for bad in [
            "nbd:/x",
            "http://h/x",
            "nbd://",
            "nbd://h:port/x",
            "nbd://h:70000/x",
            "nbd+unix:///x",
            "nbd+unix://host/x?socket=/s",
            "nbds://h/x",
            "nbd://[::1/x",
            "nbd://h/%zz",
        ] {
            assert!(NbdUri::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn display_round_trip() {
        for s in [
            "nbd://h:1/e",
            "nbd+unix:///e?socket=/tmp/x",
            "nbd://[::1]:5/e",
        ] {
            let u = NbdUri::parse(s).unwrap();
            assert_eq!(NbdUri::parse(&u.to_string()).unwrap(), u);
        }
    }
}
