//! Whom a peer's certificate must name. A server's name is checked by rustls during the
//! handshake (as any TLS client checks the host it dialled); a client's, which TLS itself
//! does not check, is checked the same way (RFC 6125 rules, by webpki) right after it.

use std::net::IpAddr;

use rustls::pki_types::{CertificateDer, ServerName};

use crate::TlsError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerName(ServerName<'static>);

impl PeerName {
    /// A DNS name (`host-b`) or an IP address (`10.0.0.2`).
    pub fn parse(name: &str) -> Result<Self, TlsError> {
        ServerName::try_from(name.to_string())
            .map(PeerName)
            .map_err(|_| TlsError::BadName(name.into()))
    }

    pub fn ip(ip: IpAddr) -> Self {
        PeerName(ServerName::IpAddress(ip.into()))
    }

    pub(crate) fn server_name(&self) -> ServerName<'static> {
        self.0.clone()
    }

    /// Whether `cert` (an end-entity certificate that already chains to the CA) names it.
    pub fn check(&self, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
        let ee = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| TlsError::Handshake(format!("peer certificate: {e}")))?;
        ee.verify_is_valid_for_subject_name(&self.0)
            .map_err(|_| TlsError::WrongPeer {
                expected: self.to_string(),
            })
    }
}

impl std::fmt::Display for PeerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            ServerName::DnsName(d) => f.write_str(d.as_ref()),
            ServerName::IpAddress(ip) => write!(f, "{}", IpAddr::from(*ip)),
            other => write!(f, "{other:?}"),
        }
    }
}
