//! A throwaway CA and node certificates (rcgen), for the tests and `make demo`. A real
//! deployment uses its own CA (resources/tls/make-ca.sh and the README say how, with
//! openssl); only the file layout of [`crate::TlsDir`] matters.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::dir::{CA_CERT, CLIENT_CERT, CLIENT_KEY, SERVER_CERT, SERVER_KEY};
use crate::TlsError;

fn gen(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// A CA that lives as long as the test (its key is never written out).
pub struct ThrowawayCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl ThrowawayCa {
    pub fn new(common_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(gen)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(gen)?;
        Ok(ThrowawayCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes a node's directory: the CA's certificate and a server and a client
    /// certificate naming `name` (a DNS name) and `ips`, each with its own key.
    pub fn write_node(&self, dir: &Path, name: &str, ips: &[IpAddr]) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir)?;
        write(dir, CA_CERT, &self.cert_pem)?;
        for (purpose, cert, key) in [
            (ExtendedKeyUsagePurpose::ServerAuth, SERVER_CERT, SERVER_KEY),
            (ExtendedKeyUsagePurpose::ClientAuth, CLIENT_CERT, CLIENT_KEY),
        ] {
            let (c, k) = self.leaf(name, ips, purpose)?;
            write(dir, cert, &c)?;
            write(dir, key, &k)?;
        }
        Ok(())
    }

    fn leaf(
        &self,
        name: &str,
        ips: &[IpAddr],
        purpose: ExtendedKeyUsagePurpose,
    ) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate().map_err(gen)?;
        let mut params = CertificateParams::new(vec![name.to_string()]).map_err(gen)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer).map_err(gen)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    written.map_err(|source| TlsError::Write { path, source })
}
