//! How the commands that talk to a running daemon (`endpoints`, `reload`)
//! reach its admin API: base URL, bearer token, TLS roots, and one place
//! that turns a non-2xx answer into the command's error.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{connect_host, CliError};
use crate::config::Sources;
use crate::dev::DevFiles;

/// Where and as whom a command reaches the admin API.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// The daemon's base URL; defaults to https://<CALLBRIDGE_LISTEN>.
    #[arg(long, value_name = "https://host:port")]
    pub(super) url: Option<String>,
    /// Admin bearer token; defaults to CALLBRIDGE_ADMIN_TOKEN (prefer the
    /// variable: arguments show in the process list).
    #[arg(long, value_name = "TOKEN")]
    admin_token: Option<String>,
    /// PEM CA file to trust besides the public web roots; defaults to the
    /// dev data dir's ca.pem when that exists.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// TOML file with the same keys as the environment (listen, admin_token, data_dir).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The admin API as a command calls it: base URL, bearer, TLS roots, and
/// the name the daemon's certificate is checked against.
pub(super) struct AdminClient {
    base: String,
    bearer: String,
    tls: std::sync::Arc<rustls::ClientConfig>,
    /// Without `--url` the daemon is reached at its listen address, but a
    /// production certificate names the host (calls.example.com), not
    /// 127.0.0.1: it is checked against the configured certificate's first
    /// DNS name instead.
    tls_name: Option<String>,
}

impl AdminClient {
    pub(super) fn new(args: &AdminArgs) -> Result<Self, CliError> {
        let src = Sources::gather(args.config.as_deref())?;
        let token = admin_token(args, &src).ok_or_else(|| {
            CliError::usage(
                "CALLBRIDGE_ADMIN_TOKEN is not set (or give --admin-token): \
                 the admin API needs its bearer token",
            )
        })?;
        // The configured certificate: its name, and its chain as trusted
        // (the daemon serves it, or the one it renews).
        let own = match args.url {
            Some(_) => None,
            None => own_certificate(&src)?,
        };
        let base = args.url.clone().unwrap_or_else(|| {
            let listen = src
                .get("listen")
                .and_then(|l| l.parse().ok())
                .unwrap_or(crate::config::DEFAULT_LISTEN);
            format!("https://{}", connect_host(listen))
        });
        let tls = client_tls(args, &src, own.as_ref().map(|c| c.pem.as_slice()))?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            bearer: format!("Bearer {token}"),
            tls,
            tls_name: own.and_then(|c| c.name),
        })
    }

    /// One request; a non-2xx answer is a runtime failure carrying the
    /// server's JSON error.
    pub(super) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<crate::client::HttpResponse, CliError> {
        let resp = self.send(method, path, body).await?;
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        Err(CliError::runtime(format!(
            "{method} {}{path}: HTTP {}: {}",
            self.base,
            resp.status,
            String::from_utf8_lossy(&resp.body).trim()
        )))
    }

    /// One request, whatever the answer's status.
    pub(super) async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<crate::client::HttpResponse, CliError> {
        let url = format!("{}{path}", self.base);
        let mut headers = vec![("authorization", self.bearer.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let body = body.map(Value::to_string).unwrap_or_default();
        let name = self.tls_name.as_deref();
        crate::client::request_once_as(&url, name, method, &headers, body, self.tls.clone())
            .await
            .map_err(|e| CliError::runtime(format!("{url}: {e}")))
    }
}

/// An answer's JSON, indented; its text as is when it is not JSON.
pub(super) fn pretty(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// `--admin-token`, else `CALLBRIDGE_ADMIN_TOKEN` (environment or file).
pub(super) fn admin_token<'a>(args: &'a AdminArgs, src: &'a Sources) -> Option<&'a str> {
    args.admin_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .or_else(|| src.get("admin_token"))
}

/// The configured certificate file's PEM and its leaf's first DNS name,
/// when the file is readable by this user. A readable file without a
/// certificate (a broken renewal) is an error: there is no name to check
/// the daemon against, and checking against the listen address instead
/// would fail with a misleading "not valid for name 127.0.0.1". The daemon
/// refuses such a file too, and keeps serving what it has.
fn own_certificate(src: &Sources) -> Result<Option<OwnCertificate>, CliError> {
    let Some(path) = src.get("tls_cert") else {
        return Ok(None);
    };
    let Ok(pem) = std::fs::read(path) else {
        return Ok(None);
    };
    if crate::tls::pem_certs(&pem).is_empty() {
        return Err(CliError::runtime(format!(
            "CALLBRIDGE_TLS_CERT: {path} holds no PEM certificate, so there is no name to \
             check the running daemon's certificate against; it was not asked and keeps \
             serving the certificate it has. Fix the file (or give --url)"
        )));
    }
    let name = crate::tls::first_dns_name(&pem);
    Ok(Some(OwnCertificate { pem, name }))
}

/// The configured certificate file, as read by [`own_certificate`].
struct OwnCertificate {
    pem: Vec<u8>,
    /// Its leaf's first DNS name.
    name: Option<String>,
}

/// Web roots, plus `--ca` (else the dev CA when there is one, as
/// `simulate` does; never created here), plus the configured chain.
fn client_tls(
    args: &AdminArgs,
    src: &Sources,
    own_chain: Option<&[u8]>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, CliError> {
    let dev_ca = DevFiles::new(&src.data_dir()).ca;
    let ca = args
        .ca
        .clone()
        .or_else(|| dev_ca.exists().then_some(dev_ca));
    let ca_err = |e: &dyn std::fmt::Display| {
        let path = ca.as_deref().unwrap_or(Path::new("")).display();
        CliError::usage(format!("--ca {path}: {e}"))
    };
    let pem = ca
        .as_deref()
        .map(std::fs::read)
        .transpose()
        .map_err(|e| ca_err(&e))?;
    // A chain that does not parse (a broken renewal on disk) adds nothing:
    // the daemon still serves the chain it loaded before.
    let extra = own_chain.map(crate::tls::pem_certs).unwrap_or_default();
    crate::tls::client_config_with(pem.as_deref(), extra).map_err(|e| ca_err(&e))
}
