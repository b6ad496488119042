//! Configuration: environment variables (`CALLBRIDGE_*`), optionally layered
//! over a TOML file whose keys are the same names in lower case without the
//! prefix. The environment wins over the file.
//!
//! Every problem is reported with the variable it concerns; `load` collects
//! all of them so `check-config` can print the whole list at once. Secret
//! values never appear in an error message.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use crate::jwt::{JwtKey, JwtSettings};
use crate::signing::SigningMode;

/// Prefix of every environment variable.
pub const PREFIX: &str = "CALLBRIDGE_";

/// `CALLBRIDGE_LISTEN` when unset (contract §2).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8443));

/// Every key the daemon reads (without prefix, lower case as in the TOML file).
pub const KEYS: &[&str] = &[
    "listen",
    "tls_cert",
    "tls_key",
    "telnyx_public_key",
    "webhook_tolerance_secs",
    "jwt_secret",
    "jwt_public_key",
    "jwt_issuer",
    "jwt_audience",
    "jwt_jwks_url",
    "jwt_user_claim",
    "jwt_auto_provision",
    "mongodb_uri",
    "mongodb_db",
    "admin_token",
    "unrouted",
    "allowed_origins",
    "max_connections_per_user",
    "client_rate_per_min",
    "max_client_message_bytes",
    "auth_timeout_secs",
    "ping_interval_secs",
    "history_hours",
    "store_timeout_secs",
    "data_dir",
    "log_format",
    "handshake_timeout_secs",
    "shutdown_drain_secs",
    "tls_reload_poll_secs",
    "mongodb_count_commands",
    "messages",
    "client_signing",
    "outbound_retry_schedule",
    "telnyx_api_key",
    "telnyx_api_url",
    "recovery",
    "recovery_interval",
    "recovery_lookback",
    "call_actions",
    "telnyx_connection_id",
    "telnyx_from",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is required{hint}")]
    Missing { var: String, hint: String },
    #[error("{var} is invalid: {reason}")]
    Invalid { var: String, reason: String },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
}

impl ConfigError {
    pub fn invalid(key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            var: var_name(key),
            reason: reason.into(),
        }
    }
    fn missing(key: &str, hint: &str) -> Self {
        ConfigError::Missing {
            var: var_name(key),
            hint: hint.to_string(),
        }
    }
}

/// All problems found while loading, in the order the keys are listed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ConfigErrors(pub Vec<ConfigError>);

pub fn var_name(key: &str) -> String {
    format!("{PREFIX}{}", key.to_ascii_uppercase())
}

/// Events that no routing rule claims (contract §6 rule 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnroutedPolicy {
    Supervisors,
    Broadcast,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: TlsPaths,
    /// Raw 32-byte Ed25519 public key Telnyx signs with.
    pub telnyx_public_key: [u8; 32],
    pub webhook_tolerance: Duration,
    /// Dialer-token key (already parsed), issuer and audience.
    pub jwt: JwtSettings,
    pub mongodb_uri: Option<String>,
    pub mongodb_db: String,
    pub admin_token: Option<String>,
    pub unrouted: UnroutedPolicy,
    /// Lower-cased, trailing `/` removed.
    pub allowed_origins: Option<Vec<String>>,
    pub max_connections_per_user: usize,
    pub client_rate_per_min: u32,
    pub max_client_message_bytes: usize,
    pub auth_timeout: Duration,
    pub ping_interval: Duration,
    pub history: Duration,
    pub store_timeout: Duration,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// A TCP connection must finish its TLS handshake within this.
    pub handshake_timeout: Duration,
    /// On shutdown, `/ready` answers 503 this long before the listener closes
    /// (time for a load balancer to notice).
    pub shutdown_drain: Duration,
    /// How often the certificate files are checked for a renewal (0: only on SIGHUP).
    pub tls_reload_poll: Duration,
    /// Count MongoDB commands (`callbridge_store_commands_total`) with the
    /// driver's command monitoring. Off by default: the driver then builds
    /// a document of every command and reply, ~0.5 ms of CPU per webhook.
    pub mongodb_count_commands: bool,
    /// `CALLBRIDGE_MESSAGES`: clients may `send` (contract §8).
    pub messages: bool,
    /// `CALLBRIDGE_CLIENT_SIGNING` (contract §9).
    pub client_signing: SigningMode,
    /// `CALLBRIDGE_OUTBOUND_RETRY_SCHEDULE` (contract §10): the delays
    /// between attempts; one attempt more than delays.
    pub outbound_retry_schedule: Vec<Duration>,
    /// `CALLBRIDGE_TELNYX_API_KEY` / `_URL` (contract §13, §14).
    pub telnyx_api: TelnyxApiSettings,
    /// `CALLBRIDGE_RECOVERY*` (contract §13); `None`: off.
    pub recovery: Option<RecoverySettings>,
    /// `CALLBRIDGE_CALL_ACTIONS` (contract §14): the actions dialers may
    /// use; empty: `off`.
    pub call_actions: Vec<String>,
    /// `CALLBRIDGE_TELNYX_CONNECTION_ID`: the Call Control app `dial` uses.
    pub telnyx_connection_id: Option<String>,
    /// `CALLBRIDGE_TELNYX_FROM`: `dial`'s default caller id (E.164).
    pub telnyx_from: Option<String>,
    pub dev: bool,
}

/// A Telnyx API key: only [`ApiKey::expose`] shows it (to build the
/// `Authorization` header); `Debug` does not.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Where and as whom callbridge calls Telnyx's REST API.
#[derive(Debug, Clone)]
pub struct TelnyxApiSettings {
    /// Unset: recovery and call actions are off.
    pub key: Option<ApiKey>,
    /// Base URL, e.g. `https://api.telnyx.com/v2` (no trailing `/`).
    pub url: String,
}

/// Contract §14's default `CALLBRIDGE_CALL_ACTIONS`: every action a dialer
/// may use.
pub const DEFAULT_CALL_ACTIONS: &str = "answer,hangup,reject,transfer,bridge,send_dtmf,speak,\
playback_start,playback_stop,record_start,record_stop,record_pause,record_resume,enqueue,\
leave_queue,dial";

fn s_opt(src: &Sources, key: &str) -> Option<String> {
    src.get(key).map(str::to_string)
}

/// Contract §2/§13 default of `CALLBRIDGE_TELNYX_API_URL`.
pub const DEFAULT_TELNYX_API_URL: &str = "https://api.telnyx.com/v2";

/// Recovery of missed webhooks from Telnyx's delivery log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoverySettings {
    /// Time between runs.
    pub interval: Duration,
    /// How far back the first run ever reads.
    pub lookback: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("jwt_key", &self.jwt.key)
            .field("mongodb", &self.mongodb_uri.as_ref().map(|_| "<set>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("unrouted", &self.unrouted)
            .field("messages", &self.messages)
            .field("client_signing", &self.client_signing)
            .field("telnyx_api", &self.telnyx_api)
            .field("recovery", &self.recovery)
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

/// Values filled in by `--dev` for whatever the operator did not set.
#[derive(Debug, Clone)]
pub struct DevDefaults {
    pub tls: TlsPaths,
    pub telnyx_public_key: [u8; 32],
    pub jwt_secret: String,
}

/// The merged key → value view of file and environment.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    values: HashMap<String, String>,
}

impl Sources {
    /// Read the optional TOML file, then overlay the process environment.
    pub fn gather(file: Option<&Path>) -> Result<Self, ConfigErrors> {
        Self::gather_with(file, |name| std::env::var(name).ok())
    }

    /// Like [`Sources::gather`] with an explicit environment (tests use this).
    pub fn gather_with(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigErrors> {
        let mut values = HashMap::new();
        if let Some(path) = file {
            values = read_toml(path).map_err(|e| ConfigErrors(vec![e]))?;
        }
        for key in KEYS {
            if let Some(v) = env(&var_name(key)) {
                values.insert((*key).to_string(), v);
            }
        }
        Ok(Sources { values })
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let values = pairs
            .into_iter()
            .map(|(k, v)| {
                let k = k.strip_prefix(PREFIX).unwrap_or(k).to_ascii_lowercase();
                (k, v.to_string())
            })
            .collect();
        Sources { values }
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(key.to_string(), value.into());
    }

    /// A value, with empty strings treated as unset (systemd env files often
    /// carry `KEY=` lines for optional settings).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.get("data_dir").unwrap_or("./callbridge-dev"))
    }
}

fn read_toml(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let file_err = |reason: String| ConfigError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // toml's message quotes the offending line, which may hold a secret:
        // report only where it is.
        let at = e
            .span()
            .map(|s| format!(" at byte {}", s.start))
            .unwrap_or_default();
        file_err(format!("not valid TOML{at}"))
    })?;
    let mut out = HashMap::new();
    for (k, v) in table {
        let key = k.to_ascii_lowercase();
        if !KEYS.contains(&key.as_str()) {
            return Err(file_err(format!("unknown key `{k}`")));
        }
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            _ => return Err(file_err(format!("`{k}` must be a string or number"))),
        };
        out.insert(key, s);
    }
    Ok(out)
}

/// Decode a base64 Ed25519 public key (standard or URL-safe alphabet).
pub fn parse_ed25519_public_key(raw: &str) -> Result<[u8; 32], String> {
    let bytes =
        crate::telnyx::decode_base64(raw.trim()).ok_or_else(|| "not valid base64".to_string())?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("decodes to {} bytes, expected 32", bytes.len()))
}

impl Config {
    /// Build the configuration from gathered sources. With `dev`, missing TLS,
    /// Telnyx and JWT settings come from `dev_defaults`.
    ///
    /// Each setting is read by its own step; the steps run in the order of
    /// the fields below (struct expressions evaluate in source order), which
    /// is the order of [`KEYS`], so every problem is reported in that order.
    /// A step that finds a problem records it and returns a placeholder; the
    /// placeholders are never used, since any problem fails the whole load.
    /// Defaults are those of contract §2; the minima refuse values that
    /// would make a limit or an interval meaningless (0 connections, 0 s).
    pub fn from_sources(
        src: &Sources,
        dev: bool,
        dev_defaults: Option<&DevDefaults>,
    ) -> Result<Config, ConfigErrors> {
        let dev_defaults = if dev { dev_defaults } else { None };
        let mut p = Parser {
            src,
            errors: Vec::new(),
        };
        let config = Config {
            listen: p.listen(),
            tls: p.tls(dev_defaults),
            telnyx_public_key: p.telnyx_public_key(dev_defaults),
            // 0 is allowed: only the exact second is accepted then.
            webhook_tolerance: p.secs("webhook_tolerance_secs", 300, 0),
            jwt: p.jwt(dev_defaults),
            mongodb_uri: p.mongodb_uri(),
            mongodb_db: p.mongodb_db(),
            admin_token: p.admin_token(),
            unrouted: p.unrouted(),
            allowed_origins: p.allowed_origins(),
            max_connections_per_user: p.num("max_connections_per_user", 20, 1),
            client_rate_per_min: p.num("client_rate_per_min", 300, 1),
            max_client_message_bytes: p.num("max_client_message_bytes", 65536, 64),
            auth_timeout: p.secs("auth_timeout_secs", 10, 1),
            ping_interval: p.secs("ping_interval_secs", 25, 1),
            history: Duration::from_secs(p.num("history_hours", 24u64, 1) * 3600),
            store_timeout: p.secs("store_timeout_secs", 5, 1),
            data_dir: src.data_dir(),
            log_format: p.log_format(),
            handshake_timeout: p.secs("handshake_timeout_secs", 10, 1),
            // 0: the listener closes as soon as shutdown starts.
            shutdown_drain: p.secs("shutdown_drain_secs", 0, 0),
            // 0: reload only on SIGHUP.
            tls_reload_poll: p.secs("tls_reload_poll_secs", 5, 0),
            mongodb_count_commands: p.flag("mongodb_count_commands"),
            messages: p.messages(),
            client_signing: p.client_signing(),
            outbound_retry_schedule: p.retry_schedule(),
            telnyx_api: p.telnyx_api(),
            recovery: p.recovery(),
            call_actions: p.call_actions(),
            telnyx_connection_id: s_opt(src, "telnyx_connection_id"),
            telnyx_from: p.telnyx_from(),
            dev,
        };
        if p.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(p.errors))
        }
    }
}

/// Contract §2's default: seven retries over ~28 hours.
pub const DEFAULT_RETRY_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

/// A retry schedule: `Ns`, `Nm`, `Nh`, comma separated; at most 20 delays
/// of at most 24 h each (a schedule longer than that is a typo).
pub fn parse_schedule(raw: &str) -> Result<Vec<Duration>, String> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let cut = part.char_indices().last().map_or(0, |(i, _)| i);
        let (n, unit) = part.split_at(cut);
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(format!("`{part}`: each delay is N followed by s, m or h")),
        };
        let n: u64 = n
            .parse()
            .map_err(|_| format!("`{part}`: each delay is N followed by s, m or h"))?;
        if n * secs > 24 * 3600 {
            return Err(format!("`{part}`: a delay is at most 24h"));
        }
        out.push(Duration::from_secs(n * secs));
    }
    if out.len() > 20 {
        return Err("at most 20 delays".into());
    }
    Ok(out)
}

/// One duration: `N` followed by `s`, `m`, `h` or `d`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let bad = || format!("`{raw}` is not a duration such as 30s, 5m, 24h or 7d");
    let cut = raw.char_indices().last().map_or(0, |(i, _)| i);
    let (n, unit) = raw.split_at(cut);
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// Reads one setting at a time, collecting every problem instead of stopping
/// at the first.
struct Parser<'a> {
    src: &'a Sources,
    errors: Vec<ConfigError>,
}

/// Minimum length of the HS256 secret and of the admin token. HS256 with a
/// short secret is brute-forceable offline from any one token; 16 bytes is
/// the floor we accept (the admin token gets the same floor).
const MIN_SECRET_LEN: usize = 16;

impl Parser<'_> {
    fn invalid(&mut self, key: &str, reason: impl Into<String>) {
        self.errors.push(ConfigError::invalid(key, reason));
    }

    fn missing(&mut self, key: &str, hint: &str) {
        self.errors.push(ConfigError::missing(key, hint));
    }

    fn num<T>(&mut self, key: &str, default: T, min: T) -> T
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(raw) = self.src.get(key) else {
            return default;
        };
        match raw.parse::<T>() {
            Ok(v) if v >= min => v,
            Ok(_) => {
                self.invalid(key, format!("must be at least {min}"));
                default
            }
            Err(_) => {
                let reason = format!("`{raw}` is not a whole number");
                self.invalid(key, reason);
                default
            }
        }
    }

    fn secs(&mut self, key: &str, default: u64, min: u64) -> Duration {
        Duration::from_secs(self.num(key, default, min))
    }

    fn listen(&mut self) -> SocketAddr {
        let default = DEFAULT_LISTEN;
        let Some(raw) = self.src.get("listen") else {
            return default;
        };
        raw.parse().unwrap_or_else(|_| {
            let reason = format!("`{raw}` is not an address:port such as 0.0.0.0:443");
            self.invalid("listen", reason);
            default
        })
    }

    /// Both files, or (with `--dev`) neither; one alone is a problem.
    fn tls(&mut self, dev: Option<&DevDefaults>) -> TlsPaths {
        let (cert, key) = (self.src.get("tls_cert"), self.src.get("tls_key"));
        match (cert, key, dev) {
            (Some(c), Some(k), _) => {
                return TlsPaths {
                    cert: c.into(),
                    key: k.into(),
                }
            }
            (None, None, Some(d)) => return d.tls.clone(),
            _ => {}
        }
        if cert.is_none() {
            self.missing(
                "tls_cert",
                " (PEM certificate chain, e.g. Let's Encrypt fullchain.pem; or run with --dev)",
            );
        }
        if key.is_none() {
            self.missing(
                "tls_key",
                " (PEM private key, e.g. Let's Encrypt privkey.pem; or run with --dev)",
            );
        }
        TlsPaths {
            cert: PathBuf::new(),
            key: PathBuf::new(),
        }
    }

    fn telnyx_public_key(&mut self, dev: Option<&DevDefaults>) -> [u8; 32] {
        match (self.src.get("telnyx_public_key"), dev) {
            (Some(raw), _) => parse_ed25519_public_key(raw).unwrap_or_else(|reason| {
                self.invalid("telnyx_public_key", reason);
                [0; 32]
            }),
            (None, Some(d)) => d.telnyx_public_key,
            (None, None) => {
                self.missing(
                    "telnyx_public_key",
                    " (base64 Ed25519 public key from the Telnyx portal)",
                );
                [0; 32]
            }
        }
    }

    fn jwt(&mut self, dev: Option<&DevDefaults>) -> JwtSettings {
        let jwks_url = self.jwks_url();
        JwtSettings {
            key: self.jwt_key(dev, jwks_url.is_some()),
            jwks_url,
            user_claim: self.user_claim(),
            auto_provision: self.auto_provision(),
            issuer: self.src.get("jwt_issuer").map(str::to_string),
            audience: self.src.get("jwt_audience").map(str::to_string),
        }
    }

    /// `https://…`, or `http://` to loopback (a test's provider).
    fn jwks_url(&mut self) -> Option<String> {
        let url = self.src.get("jwt_jwks_url")?.to_string();
        if let Err(reason) = check_api_url(&url) {
            self.invalid("jwt_jwks_url", reason);
        }
        Some(url)
    }

    /// A top-level claim name: `sub`, `user_id`, or a URL-like custom one.
    fn user_claim(&mut self) -> String {
        let claim = self.src.get("jwt_user_claim").unwrap_or("sub").to_string();
        if claim.len() > 256 || claim.contains(char::is_whitespace) {
            self.invalid("jwt_user_claim", "must be a claim name without spaces");
        }
        claim
    }

    /// `off`, or `agent` (the role given to a provisioned user).
    fn auto_provision(&mut self) -> bool {
        match self
            .src
            .get("jwt_auto_provision")
            .map(|s| s.to_ascii_lowercase())
        {
            None => false,
            Some(s) if s == "off" => false,
            Some(s) if s == "agent" => true,
            Some(s) => {
                self.invalid(
                    "jwt_auto_provision",
                    format!("`{s}` is not one of off, agent"),
                );
                false
            }
        }
    }

    /// At most one of the secret and the public key (with `--dev`, the dev
    /// secret when neither is set); one of them or the JWKS URL is
    /// required. The PEM is parsed here, once.
    fn jwt_key(&mut self, dev: Option<&DevDefaults>, jwks: bool) -> Option<JwtKey> {
        let placeholder = Some(JwtKey::Secret(Vec::new()));
        match (
            self.src.get("jwt_secret"),
            self.src.get("jwt_public_key"),
            dev,
        ) {
            (Some(_), Some(_), _) => {
                self.invalid(
                    "jwt_public_key",
                    "set either CALLBRIDGE_JWT_SECRET or CALLBRIDGE_JWT_PUBLIC_KEY, not both",
                );
                placeholder
            }
            (Some(secret), None, _) => {
                if secret.len() < MIN_SECRET_LEN {
                    self.invalid("jwt_secret", "must be at least 16 characters");
                }
                Some(JwtKey::Secret(secret.as_bytes().to_vec()))
            }
            (None, Some(raw), _) => {
                match load_pem_text(raw).and_then(|pem| JwtKey::from_public_pem(&pem)) {
                    Ok(key) => Some(key),
                    Err(reason) => {
                        self.invalid("jwt_public_key", reason);
                        placeholder
                    }
                }
            }
            (None, None, Some(d)) => Some(JwtKey::Secret(d.jwt_secret.as_bytes().to_vec())),
            (None, None, None) if jwks => None,
            (None, None, None) => {
                self.errors.push(ConfigError::Missing {
                    var: "CALLBRIDGE_JWT_SECRET, CALLBRIDGE_JWT_PUBLIC_KEY or CALLBRIDGE_JWT_JWKS_URL"
                        .into(),
                    hint: " (how dialer tokens are verified)".into(),
                });
                placeholder
            }
        }
    }

    fn mongodb_uri(&mut self) -> Option<String> {
        let uri = self.src.get("mongodb_uri")?;
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            self.invalid(
                "mongodb_uri",
                "must start with mongodb:// or mongodb+srv://",
            );
        }
        Some(uri.to_string())
    }

    /// MongoDB refuses these characters in database names.
    fn mongodb_db(&mut self) -> String {
        let db = self
            .src
            .get("mongodb_db")
            .unwrap_or("callbridge")
            .to_string();
        if db.contains(['/', '\\', '.', ' ', '"', '$']) {
            self.invalid("mongodb_db", "must not contain / \\ . space \" or $");
        }
        db
    }

    fn admin_token(&mut self) -> Option<String> {
        let token = self.src.get("admin_token")?;
        if token.len() < MIN_SECRET_LEN {
            self.invalid("admin_token", "must be at least 16 characters");
        }
        Some(token.to_string())
    }

    fn unrouted(&mut self) -> UnroutedPolicy {
        let Some(s) = self.src.get("unrouted").map(|s| s.to_ascii_lowercase()) else {
            return UnroutedPolicy::Supervisors;
        };
        match s.as_str() {
            "supervisors" => UnroutedPolicy::Supervisors,
            "broadcast" => UnroutedPolicy::Broadcast,
            "drop" => UnroutedPolicy::Drop,
            _ => {
                let reason = format!("`{s}` is not one of supervisors, broadcast, drop");
                self.invalid("unrouted", reason);
                UnroutedPolicy::Supervisors
            }
        }
    }

    /// `CALLBRIDGE_MESSAGES`: `on`/`off` (the boolean spellings too).
    fn messages(&mut self) -> bool {
        match self.src.get("messages").map(|s| s.to_ascii_lowercase()) {
            None => true,
            Some(s) if matches!(s.as_str(), "on" | "true" | "1" | "yes") => true,
            Some(s) if matches!(s.as_str(), "off" | "false" | "0" | "no") => false,
            Some(s) => {
                self.invalid("messages", format!("`{s}` is not one of on, off"));
                true
            }
        }
    }

    /// `5s,5m,30m,2h,5h,10h,10h`: comma list of `N` + `s`/`m`/`h`.
    fn retry_schedule(&mut self) -> Vec<Duration> {
        let raw = self
            .src
            .get("outbound_retry_schedule")
            .unwrap_or(DEFAULT_RETRY_SCHEDULE)
            .to_string();
        match parse_schedule(&raw) {
            Ok(v) => v,
            Err(reason) => {
                self.invalid("outbound_retry_schedule", reason);
                Vec::new()
            }
        }
    }

    /// The key (no spaces: it goes into a header) and the base URL:
    /// `https://`, or `http://` to a loopback address (a stand-in).
    fn telnyx_api(&mut self) -> TelnyxApiSettings {
        let key = self.src.get("telnyx_api_key").map(|k| {
            if k.contains(char::is_whitespace) || !k.is_ascii() {
                self.invalid(
                    "telnyx_api_key",
                    "must not contain spaces (it is sent in a header)",
                );
            }
            ApiKey(k.to_string())
        });
        let url = self
            .src
            .get("telnyx_api_url")
            .unwrap_or(DEFAULT_TELNYX_API_URL)
            .trim_end_matches('/')
            .to_string();
        if let Err(reason) = check_api_url(&url) {
            self.invalid("telnyx_api_url", reason);
        }
        TelnyxApiSettings { key, url }
    }

    /// On by default when the API key is set; `on` without a key is a mistake.
    fn recovery(&mut self) -> Option<RecoverySettings> {
        let has_key = self.src.get("telnyx_api_key").is_some();
        let on = match self.src.get("recovery").map(|s| s.to_ascii_lowercase()) {
            None => has_key,
            Some(s) if matches!(s.as_str(), "on" | "true" | "1" | "yes") => {
                if !has_key {
                    self.invalid("recovery", "`on` needs CALLBRIDGE_TELNYX_API_KEY");
                }
                true
            }
            Some(s) if matches!(s.as_str(), "off" | "false" | "0" | "no") => false,
            Some(s) => {
                self.invalid("recovery", format!("`{s}` is not one of on, off"));
                false
            }
        };
        // Telnyx retries for about a minute: a run more often than every
        // 10 s finds nothing new; the log is not kept for months.
        let interval = self.duration("recovery_interval", "5m", 10, 24 * 3600);
        let lookback = self.duration("recovery_lookback", "24h", 60, 30 * 86_400);
        on.then_some(RecoverySettings { interval, lookback })
    }

    /// A comma list of action names (Telnyx's, `a-z` and `_`), or `off`.
    fn call_actions(&mut self) -> Vec<String> {
        let raw = self
            .src
            .get("call_actions")
            .unwrap_or(DEFAULT_CALL_ACTIONS)
            .to_ascii_lowercase();
        if raw.trim() == "off" {
            return Vec::new();
        }
        let mut out: Vec<String> = Vec::new();
        for a in raw.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let ok = a.len() <= 32 && a.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            if !ok {
                self.invalid(
                    "call_actions",
                    format!("`{a}` is not an action name such as answer"),
                );
            } else if !out.iter().any(|o| o == a) {
                out.push(a.to_string());
            }
        }
        out
    }

    /// E.164, as phone numbers everywhere else.
    fn telnyx_from(&mut self) -> Option<String> {
        let raw = self.src.get("telnyx_from")?;
        let n = crate::routing::normalize_phone(raw);
        if n.is_none() {
            self.invalid(
                "telnyx_from",
                "must be an E.164 number such as +15551230001",
            );
        }
        n
    }

    fn duration(&mut self, key: &str, default: &str, min_secs: u64, max_secs: u64) -> Duration {
        let raw = self.src.get(key).unwrap_or(default).to_string();
        match parse_duration(&raw) {
            Ok(d) if (min_secs..=max_secs).contains(&d.as_secs()) => d,
            Ok(_) => {
                let reason = format!("must be between {min_secs}s and {}h", max_secs / 3600);
                self.invalid(key, reason);
                parse_duration(default).expect("defaults parse")
            }
            Err(reason) => {
                self.invalid(key, reason);
                parse_duration(default).expect("defaults parse")
            }
        }
    }

    fn client_signing(&mut self) -> SigningMode {
        match self
            .src
            .get("client_signing")
            .map(|s| s.to_ascii_lowercase())
        {
            None => SigningMode::Off,
            Some(s) if s == "off" => SigningMode::Off,
            Some(s) if s == "optional" => SigningMode::Optional,
            Some(s) if s == "required" => SigningMode::Required,
            Some(s) => {
                let reason = format!("`{s}` is not one of off, optional, required");
                self.invalid("client_signing", reason);
                SigningMode::Off
            }
        }
    }

    fn allowed_origins(&self) -> Option<Vec<String>> {
        let raw = self.src.get("allowed_origins")?;
        Some(
            raw.split(',')
                .map(normalize_origin)
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    /// `true`/`1`/`yes` or `false`/`0`/`no`; unset is false.
    fn flag(&mut self, key: &str) -> bool {
        match self.src.get(key).map(|s| s.to_ascii_lowercase()) {
            None => false,
            Some(s) if matches!(s.as_str(), "true" | "1" | "yes") => true,
            Some(s) if matches!(s.as_str(), "false" | "0" | "no") => false,
            Some(_) => {
                self.invalid(key, "must be true or false");
                false
            }
        }
    }

    fn log_format(&mut self) -> LogFormat {
        match self.src.get("log_format").map(|s| s.to_ascii_lowercase()) {
            None => LogFormat::Text,
            Some(s) if s == "text" => LogFormat::Text,
            Some(s) if s == "json" => LogFormat::Json,
            Some(s) => {
                self.invalid("log_format", format!("`{s}` is not one of text, json"));
                LogFormat::Text
            }
        }
    }
}

/// `CALLBRIDGE_JWT_PUBLIC_KEY` holds the PEM itself or a path to it. In the
/// text form a literal `\n` stands for a line break (one-line env files).
fn load_pem_text(raw: &str) -> Result<String, String> {
    if raw.contains("-----BEGIN") {
        return Ok(raw.replace("\\n", "\n"));
    }
    std::fs::read_to_string(raw).map_err(|e| format!("neither PEM text nor a readable file ({e})"))
}

/// `https://…`, or `http://` to a loopback address (tests' stand-ins).
pub fn check_api_url(url: &str) -> Result<(), String> {
    let uri: warp::http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    let host = uri.host().unwrap_or("").trim_matches(['[', ']']);
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err("http:// is allowed only to a loopback address".into()),
        _ => Err(format!("`{url}` is not an https:// URL")),
    }
}

/// `localhost` or a loopback IP address.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Origins compare case-insensitively, ignoring surrounding space and a trailing `/`.
pub fn normalize_origin(raw: &str) -> String {
    raw.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Standard base64 without padding, as used for keys we print.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_b64() -> String {
        b64(&[7u8; 32])
    }

    fn base() -> Vec<(&'static str, String)> {
        vec![
            ("CALLBRIDGE_TLS_CERT", "/tmp/c.pem".into()),
            ("CALLBRIDGE_TLS_KEY", "/tmp/k.pem".into()),
            ("CALLBRIDGE_TELNYX_PUBLIC_KEY", key_b64()),
            ("CALLBRIDGE_JWT_SECRET", "0123456789abcdef0123".into()),
        ]
    }

    fn load(pairs: &[(&str, String)]) -> Result<Config, ConfigErrors> {
        let src = Sources::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
        Config::from_sources(&src, false, None)
    }

    #[test]
    fn defaults_match_contract() {
        let c = load(&base()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.webhook_tolerance, Duration::from_secs(300));
        assert_eq!(c.mongodb_db, "callbridge");
        assert_eq!(c.unrouted, UnroutedPolicy::Supervisors);
        assert_eq!(c.max_connections_per_user, 20);
        assert_eq!(c.client_rate_per_min, 300);
        assert_eq!(c.max_client_message_bytes, 65536);
        assert_eq!(c.auth_timeout, Duration::from_secs(10));
        assert_eq!(c.ping_interval, Duration::from_secs(25));
        assert_eq!(c.history, Duration::from_secs(24 * 3600));
        assert_eq!(c.store_timeout, Duration::from_secs(5));
        assert_eq!(c.data_dir, PathBuf::from("./callbridge-dev"));
    }

    #[test]
    fn telnyx_api_and_recovery_settings() {
        let c = load(&base()).unwrap();
        assert!(c.telnyx_api.key.is_none());
        assert_eq!(c.telnyx_api.url, DEFAULT_TELNYX_API_URL);
        assert_eq!(c.recovery, None, "off without a key");

        let mut with_key = base();
        with_key.push(("CALLBRIDGE_TELNYX_API_KEY", "KEY0123456789secret".into()));
        let c = load(&with_key).unwrap();
        let r = c.recovery.expect("on by default with a key");
        assert_eq!(r.interval, Duration::from_secs(300));
        assert_eq!(r.lookback, Duration::from_secs(24 * 3600));
        assert!(
            !format!("{c:?}").contains("KEY0123456789secret"),
            "the key is never formatted"
        );

        let mut custom = with_key.clone();
        custom.push(("CALLBRIDGE_TELNYX_API_URL", "http://127.0.0.1:9/v2/".into()));
        custom.push(("CALLBRIDGE_RECOVERY_INTERVAL", "30s".into()));
        custom.push(("CALLBRIDGE_RECOVERY_LOOKBACK", "2d".into()));
        let c = load(&custom).unwrap();
        assert_eq!(c.telnyx_api.url, "http://127.0.0.1:9/v2");
        let r = c.recovery.unwrap();
        assert_eq!((r.interval.as_secs(), r.lookback.as_secs()), (30, 172_800));

        let mut off = with_key;
        off.push(("CALLBRIDGE_RECOVERY", "off".into()));
        assert_eq!(load(&off).unwrap().recovery, None);
    }

    #[test]
    fn bad_telnyx_api_settings_name_their_variable() {
        for (var, value) in [
            ("CALLBRIDGE_TELNYX_API_URL", "http://api.telnyx.com/v2"),
            ("CALLBRIDGE_TELNYX_API_URL", "ftp://x"),
            ("CALLBRIDGE_RECOVERY", "maybe"),
            ("CALLBRIDGE_RECOVERY", "on"),
            ("CALLBRIDGE_RECOVERY_INTERVAL", "1s"),
            ("CALLBRIDGE_RECOVERY_INTERVAL", "5 minutes"),
            ("CALLBRIDGE_RECOVERY_LOOKBACK", "90d"),
        ] {
            let mut pairs = base();
            pairs.push((var, value.into()));
            let err = load(&pairs).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
        }
        let mut spaced = base();
        spaced.push(("CALLBRIDGE_TELNYX_API_KEY", "two words".into()));
        let err = load(&spaced).unwrap_err().to_string();
        assert!(
            err.contains("CALLBRIDGE_TELNYX_API_KEY") && !err.contains("two words"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_names_its_variable() {
        let mut pairs = base();
        pairs.push(("CALLBRIDGE_LISTEN", "nowhere".into()));
        pairs.push(("CALLBRIDGE_PING_INTERVAL_SECS", "soon".into()));
        pairs.push(("CALLBRIDGE_UNROUTED", "everyone".into()));
        pairs[2] = ("CALLBRIDGE_TELNYX_PUBLIC_KEY", b64(&[1u8; 31]));
        let errs = load(&pairs).unwrap_err().0;
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(text
            .iter()
            .any(|t| t.starts_with("CALLBRIDGE_LISTEN is invalid")));
        assert!(text
            .iter()
            .any(|t| t.contains("CALLBRIDGE_TELNYX_PUBLIC_KEY") && t.contains("31 bytes")));
        assert!(text
            .iter()
            .any(|t| t.starts_with("CALLBRIDGE_PING_INTERVAL_SECS is invalid")));
        assert!(text
            .iter()
            .any(|t| t.starts_with("CALLBRIDGE_UNROUTED is invalid")));
        assert_eq!(errs.len(), 4);
    }

    #[test]
    fn missing_required_without_dev() {
        let errs = load(&[]).unwrap_err().0;
        let text = ConfigErrors(errs).to_string();
        for var in [
            "CALLBRIDGE_TLS_CERT",
            "CALLBRIDGE_TLS_KEY",
            "CALLBRIDGE_TELNYX_PUBLIC_KEY",
            "CALLBRIDGE_JWT_SECRET, CALLBRIDGE_JWT_PUBLIC_KEY or CALLBRIDGE_JWT_JWKS_URL",
        ] {
            assert!(text.contains(var), "{var} missing from {text}");
        }
    }

    #[test]
    fn secrets_never_in_errors() {
        let mut pairs = base();
        pairs[3] = ("CALLBRIDGE_JWT_SECRET", "short-s3cret".into());
        pairs.push(("CALLBRIDGE_ADMIN_TOKEN", "tiny-adm".into()));
        let text = load(&pairs).unwrap_err().to_string();
        assert!(!text.contains("short-s3cret"));
        assert!(!text.contains("tiny-adm"));
        assert!(text.contains("CALLBRIDGE_JWT_SECRET"));
        assert!(text.contains("CALLBRIDGE_ADMIN_TOKEN"));
    }

    #[test]
    fn environment_wins_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\nping_interval_secs = 7\nallowed_origins = [\"https://A.example/\", \"app://dialer\"]\n",
        )
        .unwrap();
        let src = Sources::gather_with(Some(&path), |name| {
            (name == "CALLBRIDGE_LISTEN").then(|| "127.0.0.1:9001".to_string())
        })
        .unwrap();
        assert_eq!(src.get("listen"), Some("127.0.0.1:9001"));
        assert_eq!(src.get("ping_interval_secs"), Some("7"));
        assert_eq!(
            src.get("allowed_origins"),
            Some("https://A.example/,app://dialer")
        );
    }

    #[test]
    fn unknown_file_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let err = Sources::gather_with(Some(&path), |_| None).unwrap_err();
        assert!(err.to_string().contains("unknown key `lisen`"));
    }

    #[test]
    fn origins_are_normalized() {
        let mut pairs = base();
        pairs.push((
            "CALLBRIDGE_ALLOWED_ORIGINS",
            " https://Dialer.Example.com/ , app://x".into(),
        ));
        let c = load(&pairs).unwrap();
        assert_eq!(
            c.allowed_origins.unwrap(),
            vec![
                "https://dialer.example.com".to_string(),
                "app://x".to_string()
            ]
        );
    }

    const BAD_PEM: &str = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----";

    fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
        let src = Sources::from_pairs(pairs.iter().copied());
        let errs = Config::from_sources(&src, false, None).unwrap_err().0;
        errs.iter().map(|e| e.to_string()).collect()
    }

    /// Every setting wrong at once: the problems come in the order of KEYS
    /// with the wording `check-config` printed before issue 9 (captured from
    /// that build).
    #[test]
    fn problems_keep_their_order_and_wording() {
        let got = problems(&[
            ("CALLBRIDGE_LISTEN", "nowhere"),
            ("CALLBRIDGE_TLS_CERT", "/x"),
            ("CALLBRIDGE_TELNYX_PUBLIC_KEY", "@@@"),
            ("CALLBRIDGE_WEBHOOK_TOLERANCE_SECS", "x"),
            ("CALLBRIDGE_JWT_SECRET", "short-s3cret"),
            ("CALLBRIDGE_JWT_PUBLIC_KEY", BAD_PEM),
            ("CALLBRIDGE_MONGODB_URI", "http://x"),
            ("CALLBRIDGE_MONGODB_DB", "a.b"),
            ("CALLBRIDGE_ADMIN_TOKEN", "tiny"),
            ("CALLBRIDGE_UNROUTED", "everyone"),
            ("CALLBRIDGE_ALLOWED_ORIGINS", "x"),
            ("CALLBRIDGE_MAX_CONNECTIONS_PER_USER", "0"),
            ("CALLBRIDGE_CLIENT_RATE_PER_MIN", "-1"),
            ("CALLBRIDGE_MAX_CLIENT_MESSAGE_BYTES", "63"),
            ("CALLBRIDGE_AUTH_TIMEOUT_SECS", "0"),
            ("CALLBRIDGE_PING_INTERVAL_SECS", "soon"),
            ("CALLBRIDGE_HISTORY_HOURS", "0"),
            ("CALLBRIDGE_STORE_TIMEOUT_SECS", "1.5"),
            ("CALLBRIDGE_LOG_FORMAT", "xml"),
            ("CALLBRIDGE_HANDSHAKE_TIMEOUT_SECS", "0"),
            ("CALLBRIDGE_SHUTDOWN_DRAIN_SECS", "-3"),
            ("CALLBRIDGE_TLS_RELOAD_POLL_SECS", "z"),
        ]);
        let want = [
            "CALLBRIDGE_LISTEN is invalid: `nowhere` is not an address:port such as 0.0.0.0:443",
            "CALLBRIDGE_TLS_KEY is required (PEM private key, e.g. Let's Encrypt privkey.pem; or run with --dev)",
            "CALLBRIDGE_TELNYX_PUBLIC_KEY is invalid: not valid base64",
            "CALLBRIDGE_WEBHOOK_TOLERANCE_SECS is invalid: `x` is not a whole number",
            "CALLBRIDGE_JWT_PUBLIC_KEY is invalid: set either CALLBRIDGE_JWT_SECRET or CALLBRIDGE_JWT_PUBLIC_KEY, not both",
            "CALLBRIDGE_MONGODB_URI is invalid: must start with mongodb:// or mongodb+srv://",
            "CALLBRIDGE_MONGODB_DB is invalid: must not contain / \\ . space \" or $",
            "CALLBRIDGE_ADMIN_TOKEN is invalid: must be at least 16 characters",
            "CALLBRIDGE_UNROUTED is invalid: `everyone` is not one of supervisors, broadcast, drop",
            "CALLBRIDGE_MAX_CONNECTIONS_PER_USER is invalid: must be at least 1",
            "CALLBRIDGE_CLIENT_RATE_PER_MIN is invalid: `-1` is not a whole number",
            "CALLBRIDGE_MAX_CLIENT_MESSAGE_BYTES is invalid: must be at least 64",
            "CALLBRIDGE_AUTH_TIMEOUT_SECS is invalid: must be at least 1",
            "CALLBRIDGE_PING_INTERVAL_SECS is invalid: `soon` is not a whole number",
            "CALLBRIDGE_HISTORY_HOURS is invalid: must be at least 1",
            "CALLBRIDGE_STORE_TIMEOUT_SECS is invalid: `1.5` is not a whole number",
            "CALLBRIDGE_LOG_FORMAT is invalid: `xml` is not one of text, json",
            "CALLBRIDGE_HANDSHAKE_TIMEOUT_SECS is invalid: must be at least 1",
            "CALLBRIDGE_SHUTDOWN_DRAIN_SECS is invalid: `-3` is not a whole number",
            "CALLBRIDGE_TLS_RELOAD_POLL_SECS is invalid: `z` is not a whole number",
        ];
        assert_eq!(got, want);
    }

    /// The missing-value wording, and a bad PEM reported in its place
    /// (after the Telnyx key, before the later settings).
    #[test]
    fn missing_and_bad_pem_wording() {
        assert_eq!(
            problems(&[]),
            [
                "CALLBRIDGE_TLS_CERT is required (PEM certificate chain, e.g. Let's Encrypt fullchain.pem; or run with --dev)",
                "CALLBRIDGE_TLS_KEY is required (PEM private key, e.g. Let's Encrypt privkey.pem; or run with --dev)",
                "CALLBRIDGE_TELNYX_PUBLIC_KEY is required (base64 Ed25519 public key from the Telnyx portal)",
                "CALLBRIDGE_JWT_SECRET, CALLBRIDGE_JWT_PUBLIC_KEY or CALLBRIDGE_JWT_JWKS_URL is required (how dialer tokens are verified)",
            ]
        );
        let key31 = b64(&[7u8; 31]);
        assert_eq!(
            problems(&[
                ("CALLBRIDGE_TLS_KEY", "/x"),
                ("CALLBRIDGE_TELNYX_PUBLIC_KEY", key31.as_str()),
                ("CALLBRIDGE_JWT_PUBLIC_KEY", BAD_PEM),
                ("CALLBRIDGE_HISTORY_HOURS", "x"),
            ]),
            [
                "CALLBRIDGE_TLS_CERT is required (PEM certificate chain, e.g. Let's Encrypt fullchain.pem; or run with --dev)",
                "CALLBRIDGE_TELNYX_PUBLIC_KEY is invalid: decodes to 31 bytes, expected 32",
                "CALLBRIDGE_JWT_PUBLIC_KEY is invalid: not a PEM RSA, EC (P-256) or Ed25519 public key",
                "CALLBRIDGE_HISTORY_HOURS is invalid: `x` is not a whole number",
            ]
        );
        let mut pairs: Vec<(&str, String)> = base();
        pairs.retain(|(k, _)| *k != "CALLBRIDGE_JWT_SECRET");
        pairs.push(("CALLBRIDGE_JWT_PUBLIC_KEY", "/nonexistent/jwt.pem".into()));
        let text = load(&pairs).unwrap_err().to_string();
        assert_eq!(
            text,
            "CALLBRIDGE_JWT_PUBLIC_KEY is invalid: neither PEM text nor a readable file \
             (No such file or directory (os error 2))"
        );
    }

    #[test]
    fn public_key_from_file_path_and_bad_pem() {
        use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.pub.pem");
        std::fs::write(&path, kp.public_key_pem()).unwrap();
        let mut pairs: Vec<(&str, String)> = base();
        pairs.retain(|(k, _)| *k != "CALLBRIDGE_JWT_SECRET");
        pairs.push((
            "CALLBRIDGE_JWT_PUBLIC_KEY",
            path.to_str().unwrap().to_string(),
        ));
        let c = load(&pairs).unwrap();
        assert!(matches!(
            c.jwt.key,
            Some(JwtKey::Public {
                alg: Algorithm::ES256,
                ..
            })
        ));
        // A token signed with the private half verifies with the loaded key.
        let claims = serde_json::json!({"sub": "u2", "exp": crate::clock::now_secs() + 60});
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        let (key, alg) = c.jwt.key.as_ref().unwrap().decoding();
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&t, &key, &Validation::new(alg)).unwrap();
        assert_eq!(data.claims["sub"], "u2");

        // The PEM text form with `\n` escapes, as one line of an env file.
        let one_line = kp.public_key_pem().replace('\n', "\\n");
        pairs.pop();
        pairs.push(("CALLBRIDGE_JWT_PUBLIC_KEY", one_line));
        assert!(matches!(
            load(&pairs).unwrap().jwt.key,
            Some(JwtKey::Public { .. })
        ));

        pairs.pop();
        pairs.push(("CALLBRIDGE_JWT_PUBLIC_KEY", BAD_PEM.into()));
        let bad = load(&pairs).unwrap_err();
        assert!(
            bad.to_string().contains("CALLBRIDGE_JWT_PUBLIC_KEY"),
            "{bad}"
        );

        // An empty file is a bad key like any other, found while loading
        // (before issue 9 it slipped through to the verifier's setup).
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        pairs.pop();
        pairs.push((
            "CALLBRIDGE_JWT_PUBLIC_KEY",
            empty.to_str().unwrap().to_string(),
        ));
        assert_eq!(
            load(&pairs).unwrap_err().to_string(),
            "CALLBRIDGE_JWT_PUBLIC_KEY is invalid: not a PEM RSA, EC (P-256) or Ed25519 public key"
        );
    }
}
