//! TLS termination with rustls (aws-lc-rs provider), TLS 1.2 and 1.3 only.
//!
//! Certificates are PEM (Let's Encrypt's `fullchain.pem` and `privkey.pem`),
//! parsed with `rustls-pki-types`; RSA, ECDSA (what Let's Encrypt issues by
//! default) and Ed25519 keys in PKCS#1, PKCS#8 or SEC1 form are accepted.
//! The certificate sits behind a resolver so it can be swapped for new
//! connections while open ones keep theirs.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsPaths;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{var}: cannot read {path}: {reason}")]
    Read {
        var: &'static str,
        path: String,
        reason: String,
    },
    #[error("CALLBRIDGE_TLS_CERT: {path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("CALLBRIDGE_TLS_KEY: {path} holds no PEM private key (PKCS#1, PKCS#8 or SEC1)")]
    NoKey { path: String },
    #[error("CALLBRIDGE_TLS_KEY: {key} does not match the certificate in {cert}, or is unsupported: {reason}")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Load and check a certificate chain and its key.
pub fn load_certified_key(paths: &TlsPaths) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_certs(&paths.cert)?;
    let key = read_key(&paths.key)?;
    let ck = CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert: paths.cert.display().to_string(),
        key: paths.key.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Arc::new(ck))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, "CALLBRIDGE_TLS_CERT")?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, "CALLBRIDGE_TLS_KEY")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::NoKey {
        path: path.display().to_string(),
    })
}

fn read(path: &Path, var: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        var,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// What identifies the certificate files' version on disk: renewals
/// replace the files (new inode, mtime or size).
pub type Fingerprint = Vec<(u64, i64, i64, u64)>;

pub fn fingerprint(paths: &TlsPaths) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    [&paths.cert, &paths.key]
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
        })
        .collect()
}

/// Holds the certificate in service; `replace` swaps it for new handshakes.
/// It also remembers which version of the files was last read, whatever
/// asked for the read (so a file watch does not read again what a
/// `POST /api/reload` already read).
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
    read_from: std::sync::Mutex<Option<Fingerprint>>,
}

impl CertResolver {
    pub fn new(key: Arc<CertifiedKey>, read_from: Option<Fingerprint>) -> Arc<Self> {
        Arc::new(CertResolver {
            current: RwLock::new(key),
            read_from: std::sync::Mutex::new(read_from),
        })
    }

    /// Note that the files were read as `now`.
    pub fn note_read(&self, now: Option<Fingerprint>) {
        *self.read_from.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// Whether the files on disk differ from the last read.
    pub fn files_changed(&self, paths: &TlsPaths) -> bool {
        let now = fingerprint(paths);
        now.is_some() && *self.read_from.lock().unwrap_or_else(|p| p.into_inner()) != now
    }

    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

pub fn server_config(resolver: Arc<CertResolver>) -> Arc<ServerConfig> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // HTTP/1.1 only: WebSocket upgrades need it, and Telnyx posts with it.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The server picks the cipher suite from its own preference order (the
    // provider's: AEAD only, strongest first) instead of the client's first
    // choice, so a client that lists a weaker suite first still gets the
    // best both support. TLS scanners (testssl.sh `cipher_order`) rate a
    // server without its own order as a HIGH finding.
    cfg.ignore_client_order = true;
    Arc::new(cfg)
}

/// Client config trusting the given PEM CA file plus the public web roots
/// (for `simulate`, `listen`, the tests and the benchmark).
pub fn client_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    client_config_with(ca_pem, Vec::new())
}

/// The certificates of a PEM text; what does not parse is left out.
pub fn pem_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// The first DNS name (subjectAltName) of the first certificate of a PEM
/// chain: the name a client checks that certificate against.
pub fn first_dns_name(pem: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let der = pem_certs(pem).into_iter().next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::DNSName(d) => Some((*d).to_string()),
        _ => None,
    })
}

/// [`client_config`], also trusting `extra` certificates as anchors (the
/// admin commands trust the chain the daemon is configured with).
pub fn client_config_with(
    ca_pem: Option<&[u8]>,
    extra: Vec<CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Certificates that cannot be anchors are skipped, not fatal.
    roots.add_parsable_certificates(extra);
    if let Some(pem) = ca_pem {
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("CA file: {e}"))?;
            roots.add(cert).map_err(|e| format!("CA file: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err("CA file holds no PEM certificate".into());
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// notAfter of the leaf certificate, Unix seconds.
pub fn not_after(key: &CertifiedKey) -> Option<i64> {
    let der = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}
