//! The `callbridge` command line (contract §1). Exit codes: 0 success, 2 bad
//! usage or invalid configuration, 1 runtime failure. Every command returns
//! `Result<(), CliError>`; [`main`] prints the error and picks the exit code.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::config::{Config, ConfigErrors, DevDefaults, LogFormat, Sources};
use crate::dev::{self, DevFiles};
use crate::telnyx::{Signer, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Success (for `serve`: after a graceful shutdown).
pub const EXIT_OK: i32 = 0;
/// Runtime failure: the store, the network, the peer.
pub const EXIT_RUNTIME: i32 = 1;
/// Bad usage or invalid configuration.
pub const EXIT_USAGE: i32 = 2;

/// Why a command failed. The variant decides the exit code; [`CliError::report`]
/// prints it (on stderr, one `error: …` line per problem).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad argument, or a configuration that is not usable: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Every problem found in the configuration: exit 2.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// Something failed while running: exit 1.
    #[error("{0}")]
    Runtime(String),
    /// `listen`: the server closed the connection other than normally, or
    /// it ended without a close frame: exit 1.
    #[error("closed: {0}")]
    Closed(String),
    /// `simulate`: the webhook was answered, but not with 2xx. The status
    /// and body are already on stdout: exit 1 without more output.
    #[error("webhook answered HTTP {0}")]
    NotAccepted(u16),
}

impl CliError {
    fn usage(e: impl std::fmt::Display) -> Self {
        CliError::Usage(e.to_string())
    }

    fn runtime(e: impl std::fmt::Display) -> Self {
        CliError::Runtime(e.to_string())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => EXIT_USAGE,
            CliError::Runtime(_) | CliError::Closed(_) | CliError::NotAccepted(_) => EXIT_RUNTIME,
        }
    }

    /// Print the error on stderr.
    pub fn report(&self) {
        match self {
            CliError::Usage(m) | CliError::Runtime(m) => eprintln!("error: {m}"),
            CliError::Config(errs) => {
                for e in &errs.0 {
                    eprintln!("error: {e}");
                }
            }
            CliError::Closed(_) => eprintln!("{self}"),
            CliError::NotAccepted(_) => {}
        }
    }
}

type CliResult = Result<(), CliError>;

#[derive(Parser, Debug)]
#[command(
    name = "callbridge",
    version,
    about = "Bridges signed Telnyx Call Control webhooks to authenticated wss:// dialer clients"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// TOML file with the same keys as the environment, lower case, without prefix.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Zero-setup mode: generated certificate, keys and secret in CALLBRIDGE_DATA_DIR.
        #[arg(long)]
        dev: bool,
    },
    /// Print a JWT for a dialer user, signed with the configured secret.
    Token {
        #[arg(long)]
        user: String,
        #[arg(long)]
        email: Option<String>,
        /// Lifetime: 90s, 30m, 1h, 7d, or plain seconds.
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Build a realistic Telnyx webhook, sign it with the dev key and POST it.
    Simulate {
        /// Telnyx event type, e.g. call.initiated, call.answered, call.hangup.
        event_type: String,
        /// Route to this user through client_state {"userId": ID}.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        /// call_control_id (and the base of the session and leg ids).
        #[arg(long)]
        call: Option<String>,
        /// Webhook URL; defaults to https://<CALLBRIDGE_LISTEN>/webhooks/telnyx.
        #[arg(long)]
        url: Option<String>,
        /// JSON payload (or a whole envelope with `data`) to send instead of the built one.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A command-line dialer: connect, authenticate, print each message as one JSON line.
    Listen {
        /// wss://host:port/ws
        #[arg(long)]
        url: String,
        #[arg(long)]
        token: String,
        /// PEM CA file to trust (besides the public web roots).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Resume after this seq.
        #[arg(long)]
        since: Option<u64>,
        /// Send each line typed on stdin to this user, as `payload` text (§8).
        #[arg(long, value_name = "USER", conflicts_with = "call")]
        send_to: Option<String>,
        /// Send each line typed on stdin to everyone on this call (§8).
        #[arg(long, value_name = "ID")]
        call: Option<String>,
        /// Sign what is sent (HMAC-SHA256, §9).
        #[arg(long)]
        sign: bool,
    },
    /// Print a new Ed25519 key pair (base64) for dev signing.
    Keygen,
    /// Validate configuration, certificate and key, key formats and store reachability.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        dev: bool,
    },
    /// Check a received outbound webhook: its Standard Webhooks signature and timestamp.
    ///
    /// Exit 0 when valid, 1 when the request does not verify (the reason on
    /// stderr), 2 for unusable arguments. The secret is never printed.
    VerifyWebhook {
        /// The endpoint's secret, whsec_… (from `endpoints add`).
        #[arg(long, value_name = "whsec_…")]
        secret: String,
        /// File of the request's header lines, `Name: value` (a first
        /// request or status line is skipped); `-` for stdin.
        #[arg(long, value_name = "FILE")]
        headers: PathBuf,
        /// File of the request body, used byte for byte; `-` for stdin.
        #[arg(long, value_name = "FILE")]
        body: PathBuf,
        /// Allowed distance of webhook-timestamp from now, in seconds.
        #[arg(long, default_value_t = 300)]
        tolerance_secs: u32,
    },
    /// Manage outbound webhook endpoints through the admin API (contract §10).
    Endpoints {
        #[command(subcommand)]
        action: EndpointsCommand,
    },
}

/// `callbridge endpoints …`: thin clients of `/api/endpoints`.
#[derive(Subcommand, Debug)]
pub enum EndpointsCommand {
    /// Create an endpoint; prints it as JSON with its secret (shown only here).
    Add {
        /// Where events are POSTed: https://…, or http:// to a loopback address.
        #[arg(value_name = "URL")]
        endpoint: String,
        /// Event names to send, comma-separated (e.g. call-hangup,message); all when omitted.
        #[arg(long, value_delimiter = ',', value_name = "a,b")]
        events: Vec<String>,
        /// A note for people: what the endpoint is for.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List endpoints, one line each: id url events enabled|disabled.
    List {
        /// Print the API's JSON answer instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete an endpoint: nothing more is sent to it.
    Remove {
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where and as whom `endpoints` reaches the admin API.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// The daemon's base URL; defaults to https://<CALLBRIDGE_LISTEN>.
    #[arg(long, value_name = "https://host:port")]
    url: Option<String>,
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

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints usage errors, and also `--help` and `--version`,
            // which are not failures.
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return finish(Err(CliError::runtime(format!(
                "cannot start the runtime: {e}"
            ))))
        }
    };
    // Reported while the runtime still exists, as before: dropping it may
    // wait for blocking tasks.
    finish(rt.block_on(dispatch(cli.command)))
}

/// The one place a command's outcome is printed and turned into the exit code.
fn finish(result: CliResult) -> i32 {
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            e.report();
            e.exit_code()
        }
    }
}

async fn dispatch(cmd: Command) -> CliResult {
    match cmd {
        Command::Serve { config, dev } => serve(config.as_deref(), dev).await,
        Command::Token {
            user,
            email,
            ttl,
            config,
        } => token(&user, email.as_deref(), &ttl, config.as_deref()),
        Command::Simulate {
            event_type,
            user,
            from,
            to,
            call,
            url,
            file,
            config,
        } => {
            let opts = SimOptions {
                user,
                from,
                to,
                call,
            };
            simulate(&event_type, opts, url, file.as_deref(), config.as_deref()).await
        }
        Command::Listen {
            url,
            token,
            ca,
            since,
            send_to,
            call,
            sign,
        } => {
            let target = match (send_to, call) {
                (Some(u), _) => Some(("to", u)),
                (None, Some(c)) => Some(("call", c)),
                (None, None) => None,
            };
            let outgoing = target.map(|target| Outgoing {
                target,
                sign,
                token: token.clone(),
                user: None,
                sent: 0,
            });
            listen(&url, &token, ca.as_deref(), since, outgoing).await
        }
        Command::Keygen => {
            keygen();
            Ok(())
        }
        Command::CheckConfig { config, dev } => check_config(config.as_deref(), dev).await,
        Command::VerifyWebhook {
            secret,
            headers,
            body,
            tolerance_secs,
        } => verify_webhook(&secret, &headers, &body, tolerance_secs),
        Command::Endpoints { action } => endpoints(action).await,
    }
}

/// Gather sources; with `dev`, prepare the data dir for the defaults.
fn load_config(file: Option<&Path>, dev: bool) -> Result<(Config, Option<DevFiles>), CliError> {
    let src = Sources::gather(file)?;
    let (files, defaults) = if dev {
        let (f, d) = dev::prepare(&src.data_dir()).map_err(CliError::usage)?;
        (Some(f), Some(d))
    } else {
        (None, None)
    };
    let config = Config::from_sources(&src, dev, defaults.as_ref())?;
    Ok((config, files))
}

pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => crate::errlog::install(builder.json().finish()),
        LogFormat::Text => crate::errlog::install(builder.finish()),
    };
}

/// SIGTERM or SIGINT. The handlers are installed when this is called (not
/// when the future is first polled), so a signal that arrives during
/// startup already means "shut down gracefully" rather than the default
/// "die at once".
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

async fn serve(file: Option<&Path>, dev: bool) -> CliResult {
    let (config, files) = load_config(file, dev)?;
    init_tracing(config.log_format);
    let shutdown = shutdown_signal()
        .map_err(|e| CliError::runtime(format!("cannot install signal handlers: {e}")))?;
    // A certificate that does not load or match its key is a configuration error.
    crate::tls::load_certified_key(&config.tls).map_err(CliError::usage)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            CliError::runtime(format!(
                "CALLBRIDGE_LISTEN {}: cannot listen: {e}",
                config.listen
            ))
        })?;
    if let Some(files) = &files {
        print_dev_banner(&config, files, &listener);
    }
    crate::server::run(listener, config, shutdown)
        .await
        .map_err(CliError::runtime)
}

fn print_dev_banner(config: &Config, files: &DevFiles, listener: &tokio::net::TcpListener) {
    let addr = listener.local_addr().unwrap_or(config.listen);
    let host = connect_host(addr);
    /// The banner's token lives a day: long enough for a dev session.
    const TOKEN_TTL_SECS: i64 = 24 * 3600;
    let token = dev::demo_token(config, TOKEN_TTL_SECS)
        .unwrap_or_else(|| "<mint with your backend>".into());
    // The banner is for the operator's terminal, not the log: it carries a
    // dev token on purpose (24 h, demo user, dev secret).
    println!("callbridge dev mode");
    println!("  listening:   https://{host}  (wss://{host}/ws)");
    println!("  CA file:     {}", files.ca.display());
    println!("  data dir:    {}", files.dir.display());
    println!("  demo user:   {} ({})", dev::DEMO_USER, dev::DEMO_PHONE);
    println!("open the web dialer:");
    println!("  https://{host}/dev");
    println!("connect a dialer:");
    println!(
        "  callbridge listen --url wss://{host}/ws --ca {} --token {token}",
        files.ca.display()
    );
    println!("send a call:");
    println!(
        "  callbridge simulate call.initiated --to {}",
        dev::DEMO_PHONE
    );
}

fn connect_host(addr: std::net::SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("{ip}:{}", addr.port())
}

/// `1h`, `30m`, `90s`, `7d` or plain seconds.
pub fn parse_ttl(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    let (num, unit) = match raw.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: i64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400, // 24 h
        _ => return None,
    };
    let secs = n.checked_mul(mult)?;
    (secs > 0).then_some(secs)
}

/// The dev data dir and its defaults, when it exists or can be created
/// (`token` and `simulate` fall back on it); a warning when it cannot.
fn dev_data(src: &Sources) -> Option<(DevFiles, DevDefaults)> {
    match dev::prepare(&src.data_dir()) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("warning: {e}");
            None
        }
    }
}

fn token(user: &str, email: Option<&str>, ttl: &str, file: Option<&Path>) -> CliResult {
    let ttl = parse_ttl(ttl).ok_or_else(|| {
        CliError::usage(format!(
            "--ttl `{ttl}` is not a duration such as 90s, 30m, 1h, 7d"
        ))
    })?;
    let src = Sources::gather(file)?;
    let secret = match (src.get("jwt_secret"), src.get("jwt_public_key")) {
        (Some(s), _) => s.to_string(),
        (None, Some(_)) => {
            return Err(CliError::usage(
                "CALLBRIDGE_JWT_PUBLIC_KEY is set: tokens are minted by the holder of the private key, not by callbridge",
            ))
        }
        (None, None) => match dev_data(&src) {
            Some((_, d)) => d.jwt_secret,
            None => {
                return Err(CliError::usage(
                    "CALLBRIDGE_JWT_SECRET is not set and no dev data dir is usable",
                ))
            }
        },
    };
    let t = crate::auth::mint(
        secret.as_bytes(),
        user,
        email,
        ttl,
        crate::clock::now_secs(),
    )
    .map_err(CliError::runtime)?;
    println!("{t}");
    Ok(())
}

fn keygen() {
    let (signer, pkcs8) = Signer::generate();
    let std = base64::engine::general_purpose::STANDARD;
    println!("public_key={}", std.encode(signer.public_key()));
    println!("private_key_pkcs8={}", std.encode(pkcs8));
}

pub struct SimOptions {
    pub user: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub call: Option<String>,
}

/// A realistic Telnyx envelope for `event_type`.
pub fn build_envelope(event_type: &str, o: &SimOptions, payload_override: Option<Value>) -> Value {
    let call = o
        .call
        .clone()
        .unwrap_or_else(|| format!("v3:sim-{}", uuid::Uuid::new_v4().simple()));
    let now = crate::clock::now_rfc3339();
    let mut payload = json!({
        "call_control_id": call,
        "call_leg_id": format!("leg-{call}"),
        "call_session_id": format!("session-{call}"),
        "connection_id": "1684641123236054244",
        "from": o.from.clone().unwrap_or_else(|| "+15551230001".into()),
        "to": o.to.clone().unwrap_or_else(|| dev::DEMO_PHONE.into()),
        "direction": "incoming",
        "state": "parked",
        "start_time": now,
    });
    let p = payload.as_object_mut().expect("object");
    add_event_fields(p, event_type, &now);
    if let Some(user) = &o.user {
        let cs = json!({ "userId": user }).to_string();
        p.insert(
            "client_state".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(cs)),
        );
    }
    if let Some(Value::Object(over)) = payload_override {
        if over.contains_key("data") {
            return Value::Object(over);
        }
        payload = Value::Object(over);
    }
    json!({
        "data": {
            "record_type": "event",
            "id": uuid::Uuid::new_v4().to_string(),
            "event_type": event_type,
            "occurred_at": now,
            "payload": payload,
        },
        "meta": {"attempt": 1, "delivered_to": "callbridge simulate"}
    })
}

/// The payload fields Telnyx adds for `event_type`, with plausible values.
fn add_event_fields(p: &mut serde_json::Map<String, Value>, event_type: &str, now: &str) {
    match event_type {
        "call.initiated" => {
            p.insert("caller_id_name".into(), json!("Simulated Caller"));
        }
        "call.answered" | "call.bridged" => {
            p.insert("state".into(), json!("answered"));
        }
        "call.hangup" => {
            p.insert("state".into(), json!("hangup"));
            p.insert("hangup_cause".into(), json!("normal_clearing"));
            p.insert("hangup_source".into(), json!("caller"));
            p.insert("sip_hangup_cause".into(), json!("200"));
            p.insert("end_time".into(), json!(now));
        }
        "call.dtmf.received" => {
            p.insert("digit".into(), json!("5"));
        }
        "call.recording.saved" => {
            p.insert("channels".into(), json!("single"));
            p.insert("recording_started_at".into(), json!(now));
            p.insert("recording_ended_at".into(), json!(now));
            p.insert(
                "recording_urls".into(),
                json!({"mp3":"https://example.com/r.mp3","wav":"https://example.com/r.wav"}),
            );
            p.insert(
                "public_recording_urls".into(),
                json!({"mp3":"https://example.com/p.mp3","wav":"https://example.com/p.wav"}),
            );
        }
        "call.gather.ended" => {
            p.insert("digits".into(), json!("1234"));
            p.insert("status".into(), json!("valid"));
        }
        "call.machine.detection.ended" | "call.machine.greeting.ended" => {
            p.insert("result".into(), json!("human"));
        }
        _ => {}
    }
}

async fn simulate(
    event_type: &str,
    opts: SimOptions,
    url: Option<String>,
    file: Option<&Path>,
    config_file: Option<&Path>,
) -> CliResult {
    let src = Sources::gather(config_file)?;
    let Some((files, _)) = dev_data(&src) else {
        return Err(CliError::usage(
            "the dev data dir is needed for the signing key (CALLBRIDGE_DATA_DIR)",
        ));
    };
    let signer = dev::load_signer(&files).map_err(CliError::usage)?;
    let payload = file.map(read_payload).transpose()?;
    let url = url.unwrap_or_else(|| {
        let listen = src
            .get("listen")
            .and_then(|l| l.parse().ok())
            .unwrap_or(crate::config::DEFAULT_LISTEN);
        format!("https://{}/webhooks/telnyx", connect_host(listen))
    });
    let body = build_envelope(event_type, &opts, payload).to_string();
    let ts = crate::clock::now_secs();
    let sig = signer.sign(ts, body.as_bytes());
    let ca = std::fs::read(&files.ca).ok();
    let tls = crate::tls::client_config(ca.as_deref()).map_err(CliError::usage)?;
    let ts_s = ts.to_string();
    let headers = [
        ("content-type", "application/json"),
        (SIGNATURE_HEADER, sig.as_str()),
        (TIMESTAMP_HEADER, ts_s.as_str()),
    ];
    let resp = crate::client::request_once(&url, "POST", &headers, body, tls)
        .await
        .map_err(|e| CliError::runtime(format!("{url}: {e}")))?;
    println!("HTTP {}", resp.status);
    println!("{}", String::from_utf8_lossy(&resp.body));
    if (200..300).contains(&resp.status) {
        Ok(())
    } else {
        Err(CliError::NotAccepted(resp.status))
    }
}

/// `simulate --file`: a JSON object (a payload, or a whole envelope).
fn read_payload(path: &Path) -> Result<Value, CliError> {
    let parsed = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()));
    match parsed {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(CliError::usage(format!(
            "--file {}: not a JSON object",
            path.display()
        ))),
        Err(e) => Err(CliError::usage(format!("--file {}: {e}", path.display()))),
    }
}

/// What `listen` sends: each stdin line as a `send` payload (§8), signed
/// when asked (§9). Lines wait until `connected` has named the user (the
/// signing key needs the user id).
struct Outgoing {
    /// (`"to"` or `"call"`, its value).
    target: (&'static str, String),
    sign: bool,
    token: String,
    /// From `connected.data.userId`.
    user: Option<String>,
    sent: u64,
}

impl Outgoing {
    fn frame(&mut self, line: &str) -> String {
        self.sent += 1;
        let (key, value) = &self.target;
        let mut msg =
            json!({"type": "send", "payload": line, "ref": format!("line-{}", self.sent)});
        msg[*key] = json!(value);
        let inner = msg.to_string();
        match (&self.user, self.sign) {
            (Some(user), true) => {
                crate::signing::envelope_json(&self.token, user, &inner, crate::clock::now_ms())
            }
            _ => inner,
        }
    }

    /// Learn the user id from `connected`.
    fn observe(&mut self, text: &str) {
        if self.user.is_some() {
            return;
        }
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            if v["event"] == "connected" {
                self.user = v["data"]["userId"].as_str().map(str::to_string);
            }
        }
    }
}

async fn listen(
    url: &str,
    token: &str,
    ca: Option<&Path>,
    since: Option<u64>,
    mut outgoing: Option<Outgoing>,
) -> CliResult {
    use futures_util::SinkExt;
    use tokio::io::AsyncBufReadExt;
    let ca_err = |e: &dyn std::fmt::Display| CliError::usage(format!("--ca: {e}"));
    let ca_pem = ca.map(std::fs::read).transpose().map_err(|e| ca_err(&e))?;
    let tls = crate::tls::client_config(ca_pem.as_deref()).map_err(|e| ca_err(&e))?;
    let url = match since {
        Some(s) if url.contains('?') => format!("{url}&since={s}"),
        Some(s) => format!("{url}?since={s}"),
        None => url.to_string(),
    };
    let bearer = format!("Bearer {token}");
    let (mut ws, _) = crate::client::ws_connect(&url, &[("authorization", bearer.as_str())], tls)
        .await
        .map_err(|e| CliError::runtime(format!("{url}: {e}")))?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = outgoing.is_some();
    loop {
        let ready = outgoing.as_ref().is_some_and(|o| o.user.is_some());
        tokio::select! {
            msg = ws.next() => {
                let Some(msg) = msg else { break };
                if let Some(end) = print_server_message(msg.map_err(CliError::runtime)?, outgoing.as_mut()) {
                    return end;
                }
            }
            line = lines.next_line(), if stdin_open && ready => match line {
                Ok(Some(line)) if !line.trim().is_empty() => {
                    let frame = outgoing.as_mut().expect("ready").frame(&line);
                    ws.send(Message::Text(frame.into())).await.map_err(CliError::runtime)?;
                }
                Ok(Some(_)) => {}
                // End of input: keep listening.
                Ok(None) | Err(_) => stdin_open = false,
            },
        }
    }
    Err(CliError::Closed("connection ended".into()))
}

/// Print one server message; `Some` when the connection ended.
fn print_server_message(msg: Message, outgoing: Option<&mut Outgoing>) -> Option<CliResult> {
    match msg {
        Message::Text(t) => {
            if let Some(o) = outgoing {
                o.observe(t.as_str());
            }
            println!("{}", t.as_str());
            None
        }
        Message::Close(frame) => {
            let (code, reason) = frame
                .map(|f| (u16::from(f.code), f.reason.to_string()))
                .unwrap_or((crate::protocol::close::NO_STATUS, String::new()));
            let closed = CliError::Closed(format!("{code} {reason}"));
            if code != crate::protocol::close::NORMAL {
                return Some(Err(closed));
            }
            // A normal close is the end of the session, not a failure.
            closed.report();
            Some(Ok(()))
        }
        _ => None,
    }
}

async fn check_config(file: Option<&Path>, dev: bool) -> CliResult {
    let (config, _) = load_config(file, dev)?;
    println!("ok: configuration parsed");
    crate::tls::load_certified_key(&config.tls).map_err(CliError::usage)?;
    println!(
        "ok: TLS certificate and key match ({})",
        config.tls.cert.display()
    );
    // The key was parsed with the configuration: a bad one is reported above.
    println!("ok: JWT verification key");
    match &config.mongodb_uri {
        None => {
            println!("ok: store: embedded in-memory (CALLBRIDGE_MONGODB_URI not set; nothing survives a restart)");
            Ok(())
        }
        Some(uri) => check_mongodb(&config, uri).await,
    }
}

/// `check-config`: the store answers, and whether its indexes exist yet.
async fn check_mongodb(config: &Config, uri: &str) -> CliResult {
    let store = crate::store::mongo::MongoStore::connect_only(
        uri,
        &config.mongodb_db,
        config.history,
        config.store_timeout,
        false,
    )
    .await
    .map_err(|e| {
        CliError::runtime(format!(
            "CALLBRIDGE_MONGODB_URI: MongoDB not reachable: {e}"
        ))
    })?;
    println!("ok: MongoDB reachable (database {})", config.mongodb_db);
    let missing = store
        .missing_indexes()
        .await
        .map_err(|e| CliError::runtime(format!("MongoDB indexes could not be listed: {e}")))?;
    if missing.is_empty() {
        println!("ok: MongoDB indexes in place");
    } else {
        println!(
            "note: MongoDB indexes not created yet (serve creates them at start): {}",
            missing.join(", ")
        );
    }
    report_transaction_lifetime(store.transaction_lifetime_limit().await);
    Ok(())
}

/// Above this, an instance killed mid-ingest stalls its users' events
/// noticeably; callbridge's transactions take milliseconds.
const LIFETIME_ADVISED_SECS: i64 = 15;

fn report_transaction_lifetime(limit: Option<i64>) {
    match limit {
        Some(n) if n <= LIFETIME_ADVISED_SECS => {
            println!("ok: MongoDB transactionLifetimeLimitSeconds = {n}");
        }
        Some(n) => println!(
            "note: MongoDB transactionLifetimeLimitSeconds = {n}: an instance killed mid-ingest \
             holds its users' seq counters that long, delaying their events; \
             10 is plenty for callbridge (docs/mongodb.md)"
        ),
        None => println!(
            "note: MongoDB transactionLifetimeLimitSeconds could not be read \
             (getParameter refused); 10 is advised (docs/mongodb.md)"
        ),
    }
}

/// `verify-webhook`: check one received request the way a receiver using
/// the `standardwebhooks` libraries would.
fn verify_webhook(secret: &str, headers: &Path, body: &Path, tolerance_secs: u32) -> CliResult {
    use crate::outbound::signature::{self, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
    let stdin = Path::new("-");
    if headers == stdin && body == stdin {
        return Err(CliError::usage(
            "--headers and --body cannot both be - (stdin)",
        ));
    }
    signature::secret_key(secret).map_err(|e| CliError::usage(format!("--secret: {e}")))?;
    let head = read_input(headers, "--headers")?;
    let body = read_input(body, "--body")?;
    let fields = parse_header_lines(&String::from_utf8_lossy(&head))
        .map_err(|e| CliError::usage(format!("--headers {}: {e}", headers.display())))?;
    let wanted = [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER];
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|h| fields.get(*h).is_none_or(|v| v.is_empty()))
        .collect();
    if !missing.is_empty() {
        return Err(CliError::runtime(format!(
            "missing header: {}",
            missing.join(", ")
        )));
    }
    let id = &fields[ID_HEADER];
    signature::verify(
        secret,
        id,
        &fields[TIMESTAMP_HEADER],
        &fields[SIGNATURE_HEADER],
        &body,
        crate::clock::now_secs(),
        i64::from(tolerance_secs),
    )
    .map_err(CliError::runtime)?;
    println!("ok: signature valid (webhook-id {id})");
    Ok(())
}

/// A file's bytes, or stdin's for `-`; an unreadable file is a bad argument.
fn read_input(path: &Path, flag: &str) -> Result<Vec<u8>, CliError> {
    use std::io::Read as _;
    let read = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map(|_| buf)
    } else {
        std::fs::read(path)
    };
    read.map_err(|e| CliError::usage(format!("{flag} {}: {e}", path.display())))
}

/// Header lines (`Name: value`) by lower-case name. Blank lines, a first
/// request or status line (`POST / HTTP/1.1`, `HTTP/1.1 200 OK`) and
/// HTTP/2 pseudo-headers (`:method: POST`) are skipped; a repeated name's
/// values are joined with a space (several `webhook-signature` lines then
/// count as one list, and a repeated `webhook-id` does not verify).
fn parse_header_lines(text: &str) -> Result<std::collections::HashMap<String, String>, String> {
    let mut fields = std::collections::HashMap::new();
    let mut first = true;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        if std::mem::replace(&mut first, false) && is_start_line(line) {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .filter(|(name, _)| !name.is_empty() && !name.contains(char::is_whitespace))
            .ok_or_else(|| format!("line {} is not a `Name: value` header line", n + 1))?;
        let value = value.trim();
        fields
            .entry(name.to_ascii_lowercase())
            .and_modify(|v: &mut String| {
                v.push(' ');
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    Ok(fields)
}

/// `HTTP/1.1 200 OK` or `POST /hooks HTTP/1.1`.
fn is_start_line(line: &str) -> bool {
    line.starts_with("HTTP/")
        || line
            .rsplit_once(' ')
            .is_some_and(|(_, version)| version.starts_with("HTTP/"))
}

async fn endpoints(action: EndpointsCommand) -> CliResult {
    match action {
        EndpointsCommand::Add {
            endpoint,
            events,
            description,
            admin,
        } => {
            let client = AdminClient::new(&admin)?;
            endpoints_add(&client, &endpoint, &events, description.as_deref()).await
        }
        EndpointsCommand::List { json, admin } => {
            endpoints_list(&AdminClient::new(&admin)?, json).await
        }
        EndpointsCommand::Remove { id, admin } => {
            endpoints_remove(&AdminClient::new(&admin)?, &id).await
        }
    }
}

/// The admin API as `endpoints` calls it: base URL, bearer, TLS roots.
struct AdminClient {
    base: String,
    bearer: String,
    tls: std::sync::Arc<rustls::ClientConfig>,
}

impl AdminClient {
    fn new(args: &AdminArgs) -> Result<Self, CliError> {
        let src = Sources::gather(args.config.as_deref())?;
        let token = args
            .admin_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .or_else(|| src.get("admin_token"))
            .ok_or_else(|| {
                CliError::usage(
                    "CALLBRIDGE_ADMIN_TOKEN is not set (or give --admin-token): \
                     the admin API needs its bearer token",
                )
            })?;
        let base = args.url.clone().unwrap_or_else(|| {
            let listen = src
                .get("listen")
                .and_then(|l| l.parse().ok())
                .unwrap_or(crate::config::DEFAULT_LISTEN);
            format!("https://{}", connect_host(listen))
        });
        // The dev CA when there is one, as `simulate` does; never created here.
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
        let tls = crate::tls::client_config(pem.as_deref()).map_err(|e| ca_err(&e))?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            bearer: format!("Bearer {token}"),
            tls,
        })
    }

    /// One request; a non-2xx answer is a runtime failure carrying the
    /// server's JSON error.
    async fn call(
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
        let resp = crate::client::request_once(&url, method, &headers, body, self.tls.clone())
            .await
            .map_err(|e| CliError::runtime(format!("{url}: {e}")))?;
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        Err(CliError::runtime(format!(
            "{method} {url}: HTTP {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body).trim()
        )))
    }
}

/// An answer's JSON, indented; its text as is when it is not JSON.
fn pretty(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

async fn endpoints_add(
    client: &AdminClient,
    url: &str,
    events: &[String],
    description: Option<&str>,
) -> CliResult {
    let mut events: Vec<&str> = events
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .collect();
    if events.is_empty() {
        events.push("*");
    }
    let mut body = json!({ "url": url, "events": events });
    if let Some(d) = description {
        body["description"] = json!(d);
    }
    let resp = client.call("POST", "/api/endpoints", Some(&body)).await?;
    // The one place the secret is shown: on stdout, for the user.
    println!("{}", pretty(&resp.body));
    Ok(())
}

async fn endpoints_list(client: &AdminClient, as_json: bool) -> CliResult {
    let resp = client.call("GET", "/api/endpoints", None).await?;
    if as_json {
        println!("{}", pretty(&resp.body));
        return Ok(());
    }
    let answer = resp.json();
    let list = answer["endpoints"]
        .as_array()
        .ok_or_else(|| CliError::runtime("the answer has no `endpoints` list"))?;
    for e in list {
        println!("{}", endpoint_line(e));
    }
    Ok(())
}

/// `id url events enabled|disabled`.
fn endpoint_line(e: &Value) -> String {
    let events: Vec<&str> = e["events"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let state = if e["disabled"].as_bool().unwrap_or(false) {
        "disabled"
    } else {
        "enabled"
    };
    format!(
        "{} {} {} {state}",
        e["id"].as_str().unwrap_or("?"),
        e["url"].as_str().unwrap_or("?"),
        events.join(",")
    )
}

async fn endpoints_remove(client: &AdminClient, id: &str) -> CliResult {
    let id_ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
    if !id_ok {
        return Err(CliError::usage(format!(
            "`{id}` is not an endpoint id (see `callbridge endpoints list`)"
        )));
    }
    client
        .call("DELETE", &format!("/api/endpoints/{id}"), None)
        .await?;
    println!("removed {id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("1h"), Some(3600));
        assert_eq!(parse_ttl("30m"), Some(1800));
        assert_eq!(parse_ttl("90s"), Some(90));
        assert_eq!(parse_ttl("7d"), Some(604800));
        assert_eq!(parse_ttl("45"), Some(45));
        assert_eq!(parse_ttl("0"), None);
        assert_eq!(parse_ttl("1y"), None);
        assert_eq!(parse_ttl("h"), None);
        assert_eq!(parse_ttl("99999999999999999999d"), None);
    }

    #[test]
    fn each_error_kind_has_its_exit_code() {
        let config = ConfigErrors(vec![crate::config::ConfigError::invalid("listen", "x")]);
        assert_eq!(CliError::usage("bad --ttl").exit_code(), EXIT_USAGE);
        assert_eq!(CliError::Config(config).exit_code(), EXIT_USAGE);
        assert_eq!(CliError::runtime("refused").exit_code(), EXIT_RUNTIME);
        assert_eq!(
            CliError::Closed("4001 token".into()).exit_code(),
            EXIT_RUNTIME
        );
        assert_eq!(CliError::NotAccepted(401).exit_code(), EXIT_RUNTIME);
        assert_eq!(
            CliError::Closed("connection ended".into()).to_string(),
            "closed: connection ended"
        );
    }
}

#[cfg(test)]
mod outbound_tests {
    use super::*;

    #[test]
    fn header_lines_by_lower_case_name() {
        let text = "POST /hooks HTTP/1.1\r\nHost: x\r\nWebhook-Id: msg_1\r\n\r\n\
                    webhook-timestamp:  123 \r\nWEBHOOK-SIGNATURE: v1,a\nwebhook-signature: v1,b\n";
        let f = parse_header_lines(text).unwrap();
        assert_eq!(f["webhook-id"], "msg_1");
        assert_eq!(f["webhook-timestamp"], "123");
        assert_eq!(f["webhook-signature"], "v1,a v1,b");
        assert_eq!(f["host"], "x");
        let status = parse_header_lines("HTTP/1.1 200 OK\nwebhook-id: a\n").unwrap();
        assert_eq!(status["webhook-id"], "a");
        let h2 = parse_header_lines(":method: POST\nwebhook-id: a\n").unwrap();
        assert_eq!(h2.len(), 1);
        assert!(parse_header_lines("").unwrap().is_empty());
    }

    #[test]
    fn lines_that_are_not_headers_are_refused() {
        let err = parse_header_lines("webhook-id: a\nnot a header\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(parse_header_lines("bad name: x\n").is_err());
        // A request line only counts as the first line.
        assert!(parse_header_lines("a: b\nPOST / HTTP/1.1\n").is_err());
    }

    #[test]
    fn list_lines() {
        let e = json!({"id": "ep_1", "url": "https://h/x", "events": ["call-hangup", "message"], "disabled": false});
        assert_eq!(
            endpoint_line(&e),
            "ep_1 https://h/x call-hangup,message enabled"
        );
        let d = json!({"id": "ep_2", "url": "https://h/y", "events": ["*"], "disabled": true});
        assert_eq!(endpoint_line(&d), "ep_2 https://h/y * disabled");
    }

    #[test]
    fn endpoints_commands_parse() {
        let cli = Cli::try_parse_from([
            "callbridge",
            "endpoints",
            "add",
            "https://crm.example/hook",
            "--events",
            "call-hangup,message",
            "--url",
            "https://cb:8443",
        ])
        .unwrap();
        let Command::Endpoints {
            action:
                EndpointsCommand::Add {
                    endpoint,
                    events,
                    admin,
                    ..
                },
        } = cli.command
        else {
            panic!("not endpoints add");
        };
        assert_eq!(endpoint, "https://crm.example/hook");
        assert_eq!(events, ["call-hangup", "message"]);
        assert_eq!(admin.url.as_deref(), Some("https://cb:8443"));
        assert!(Cli::try_parse_from(["callbridge", "endpoints", "remove"]).is_err());
        assert!(Cli::try_parse_from(["callbridge", "verify-webhook", "--secret", "s"]).is_err());
    }
}
