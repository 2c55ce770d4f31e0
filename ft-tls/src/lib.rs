//! Mutual TLS 1.3 for the channels between FT hosts (the logging channel, the arbiter).
//!
//! - [`TlsDir`]: a directory in QEMU's `tls-creds-x509` layout (`ca-cert.pem`,
//!   `server-cert.pem`/`server-key.pem` for the side that listens, `client-cert.pem`/
//!   `client-key.pem` for the side that connects), loaded into rustls configurations that
//!   speak TLS 1.3 only and require a certificate from the same CA on both sides.
//! - [`PeerName`]: whom the other side must be: a DNS name or an IP address that its
//!   certificate carries (checked on both sides, the client's certificate included).
//! - [`TlsDir::connect`], [`TlsDir::accept`]: a handshake on a blocking socket that ends
//!   within a deadline, then [`Session::relay`]: a thread that owns the TLS session and
//!   gives the caller a plain byte stream (a Unix socket pair), so that code written for a
//!   socket shared by a reader and a writer thread works unchanged (no kTLS on these
//!   kernels; see docs/ARCHITECTURE.md).
//! - [`NonBlocking`]: a session on a non-blocking socket, for poll loops (the arbiter's
//!   server, the VMM's arbiter client on its event loop).
//! - [`ca`]: a throwaway CA and node certificates (rcgen), for the tests and the demo.

pub mod ca;
mod dir;
mod error;
mod handshake;
mod nonblocking;
mod peer;
mod relay;

pub use dir::TlsDir;
pub use error::TlsError;
pub use handshake::{Session, HANDSHAKE_TIMEOUT};
pub use nonblocking::NonBlocking;
pub use peer::PeerName;
pub use relay::RelayHook;
pub use rustls::pki_types::CertificateDer;
