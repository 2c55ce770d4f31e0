//! A certificate directory in QEMU's tls-creds-x509 layout, loaded into rustls
//! configurations: TLS 1.3 only, the ring provider, and on both sides a certificate that
//! chains to `ca-cert.pem` required of the peer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::TlsError;

/// The files every directory holds (QEMU's names).
pub const CA_CERT: &str = "ca-cert.pem";
pub const SERVER_CERT: &str = "server-cert.pem";
pub const SERVER_KEY: &str = "server-key.pem";
pub const CLIENT_CERT: &str = "client-cert.pem";
pub const CLIENT_KEY: &str = "client-key.pem";

/// Loaded once at startup (before the seccomp filters, which allow no file opens).
#[derive(Clone)]
pub struct TlsDir {
    server: Option<Arc<ServerConfig>>,
    client: Option<Arc<ClientConfig>>,
    pub path: PathBuf,
}

impl std::fmt::Debug for TlsDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsDir({})", self.path.display())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |why: String| TlsError::Pem {
        path: path.into(),
        why,
    };
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no certificate in the file".into()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| TlsError::Pem {
        path: path.into(),
        why: e.to_string(),
    })
}

fn roots(dir: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certs(&dir.join(CA_CERT))? {
        roots.add(ca).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn cfg(e: rustls::Error) -> TlsError {
    TlsError::Config(e.to_string())
}

fn server_config(dir: &Path, roots: Arc<RootCertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cfg)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&dir.join(SERVER_CERT))?, key(&dir.join(SERVER_KEY))?)
        .map_err(cfg)?;
    Ok(Arc::new(server))
}

fn client_config(dir: &Path, roots: Arc<RootCertStore>) -> Result<Arc<ClientConfig>, TlsError> {
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cfg)?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs(&dir.join(CLIENT_CERT))?, key(&dir.join(CLIENT_KEY))?)
        .map_err(cfg)?;
    Ok(Arc::new(client))
}

impl TlsDir {
    /// Loads `dir`: both pairs, as every FT host plays both sides (a backup listens; once
    /// live, it connects to the next backup).
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let roots = roots(dir)?;
        Ok(TlsDir {
            server: Some(server_config(dir, roots.clone())?),
            client: Some(client_config(dir, roots)?),
            path: dir.into(),
        })
    }

    /// Loads only the CA and the server pair, for a service that only listens (the
    /// arbiter): its directory needs no client certificate.
    pub fn load_server(dir: &Path) -> Result<Self, TlsError> {
        Ok(TlsDir {
            server: Some(server_config(dir, roots(dir)?)?),
            client: None,
            path: dir.into(),
        })
    }

    pub(crate) fn server(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.server.clone().ok_or_else(|| {
            TlsError::Config(format!(
                "{}: no server certificate loaded",
                self.path.display()
            ))
        })
    }

    pub(crate) fn client(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.client.clone().ok_or_else(|| {
            TlsError::Config(format!(
                "{}: no client certificate loaded",
                self.path.display()
            ))
        })
    }
}
