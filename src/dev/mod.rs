//! `--dev`: everything a first run needs, generated once into
//! `CALLBRIDGE_DATA_DIR` and reused: a local CA and a certificate for
//! `localhost`/`127.0.0.1`/`::1` signed by it, a dev Ed25519 signing key
//! (its public half stands in for the Telnyx key), a random JWT secret, and
//! a demo user. Without a Telnyx API key, [`telnyx::DevTelnyx`] stands in
//! for Telnyx's Call Control so call actions work offline.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::config::{DevDefaults, TlsPaths};
use crate::domain::{Role, User};
use crate::store::{Store, StoreResult};
use crate::telnyx::Signer;

pub mod telnyx;

pub const DEMO_USER: &str = "demo";
pub const DEMO_PHONE: &str = "+15550000001";
/// The caller of a `callbridge simulate` call when `--from` is not given.
pub const DEV_CALLER: &str = "+15551230001";
/// The Call Control application (`connection_id`) of simulated calls, and
/// of calls the built-in stand-in dials when the dialer names none.
pub const DEV_CONNECTION_ID: &str = "1684641123236054244";

/// The files of a dev data dir.
#[derive(Debug, Clone)]
pub struct DevFiles {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub signing_key: PathBuf,
    pub jwt_secret: PathBuf,
}

impl DevFiles {
    pub fn new(dir: &Path) -> Self {
        DevFiles {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            signing_key: dir.join("telnyx-signing-key.pk8.b64"),
            jwt_secret: dir.join("jwt-secret"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("CALLBRIDGE_DATA_DIR {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("CALLBRIDGE_DATA_DIR: {0}")]
    Bad(String),
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DevError + '_ {
    move |e| DevError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Write a file readable by its owner only, atomically (temp file + rename),
/// so a crash never leaves half a key behind.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), DevError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(contents).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Create whatever is missing in `dir` and return the dev defaults.
pub fn prepare(dir: &Path) -> Result<(DevFiles, DevDefaults), DevError> {
    let files = DevFiles::new(dir);
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Owner only: the dir holds private keys and the JWT secret.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir))?;
    }

    if !files.ca.exists() || !files.ca_key.exists() || !files.cert.exists() || !files.key.exists() {
        issue_certificates(&files)?;
    }
    if !files.signing_key.exists() {
        let (_, pkcs8) = Signer::generate();
        let text = base64::engine::general_purpose::STANDARD.encode(pkcs8);
        write_private(&files.signing_key, text.as_bytes())?;
    }
    if !files.jwt_secret.exists() {
        // 256 random bits: HS256's own key size, far above the 16-character floor.
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| DevError::Bad("no randomness".into()))?;
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        write_private(&files.jwt_secret, text.as_bytes())?;
    }

    let signer = load_signer(&files)?;
    let jwt_secret = std::fs::read_to_string(&files.jwt_secret)
        .map_err(io_err(&files.jwt_secret))?
        .trim()
        .to_string();
    let defaults = DevDefaults {
        tls: TlsPaths {
            cert: files.cert.clone(),
            key: files.key.clone(),
        },
        telnyx_public_key: signer.public_key(),
        jwt_secret,
    };
    Ok((files, defaults))
}

/// The dev signing key (the private half of the dev "Telnyx" key).
pub fn load_signer(files: &DevFiles) -> Result<Signer, DevError> {
    let text = std::fs::read_to_string(&files.signing_key).map_err(io_err(&files.signing_key))?;
    let der = crate::telnyx::decode_base64(text.trim())
        .ok_or_else(|| DevError::Bad(format!("{} is not base64", files.signing_key.display())))?;
    Signer::from_pkcs8(&der).map_err(DevError::Bad)
}

/// A CA and a leaf for the loopback names, written as PEM files.
pub fn issue_certificates(files: &DevFiles) -> Result<(), DevError> {
    let bad = |e: rcgen::Error| DevError::Bad(format!("certificate generation failed: {e}"));
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(bad)?;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "callbridge dev CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(bad)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_pem = issue_leaf(&issuer)?;
    write_private(&files.ca_key, ca_key_pem.as_bytes())?;
    write_private(&files.ca, ca_cert.pem().as_bytes())?;
    write_private(&files.key, leaf_pem.1.as_bytes())?;
    write_private(
        &files.cert,
        format!("{}{}", leaf_pem.0, ca_cert.pem()).as_bytes(),
    )?;
    Ok(())
}

/// A fresh leaf for `localhost`, `127.0.0.1`, `::1`: (cert PEM, key PEM).
pub fn issue_leaf(
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> Result<(String, String), DevError> {
    let bad = |e: rcgen::Error| DevError::Bad(format!("certificate generation failed: {e}"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(bad)?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(bad)?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress(
        std::net::Ipv4Addr::LOCALHOST.into(),
    ));
    params.subject_alt_names.push(rcgen::SanType::IpAddress(
        std::net::Ipv6Addr::LOCALHOST.into(),
    ));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "callbridge dev");
    let cert = params.signed_by(&key, issuer).map_err(bad)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The demo user of the quick tour, created when missing.
pub async fn seed_demo_user(store: &dyn Store) -> StoreResult<()> {
    if store.get_user(DEMO_USER).await?.is_none() {
        store
            .upsert_user(User {
                id: DEMO_USER.into(),
                email: Some("demo@example.com".into()),
                name: Some("Demo Agent".into()),
                role: Role::Agent,
                phone_numbers: vec![DEMO_PHONE.into()],
                connection_ids: Vec::new(),
                disabled: false,
                tokens_revoked_at: None,
            })
            .await?;
        tracing::info!(user = DEMO_USER, "created the demo user");
    }
    Ok(())
}

/// A token for the demo user, signed with the dev HS256 secret (`None`
/// when the JWT key is a public key: tokens come from the operator's
/// backend then). For the banner and the `/dev` page.
pub fn demo_token(config: &crate::config::Config, ttl_secs: i64) -> Option<String> {
    match &config.jwt.key {
        Some(crate::jwt::JwtKey::Secret(s)) => {
            crate::auth::mint(s, DEMO_USER, None, ttl_secs, crate::clock::now_secs()).ok()
        }
        _ => None,
    }
}
