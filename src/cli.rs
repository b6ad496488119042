//! The `callbridge` command line (contract §1). Exit codes: 0 success, 2 bad
//! usage or invalid configuration, 1 runtime failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::config::{Config, ConfigErrors, DevDefaults, LogFormat, Sources};
use crate::dev::{self, DevFiles};
use crate::jwt::JwtKey;
use crate::telnyx::{Signer, SIGNATURE_HEADER, TIMESTAMP_HEADER};

pub const EXIT_OK: i32 = 0;
pub const EXIT_RUNTIME: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

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
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
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
            eprintln!("error: cannot start the runtime: {e}");
            return EXIT_RUNTIME;
        }
    };
    rt.block_on(dispatch(cli.command))
}

async fn dispatch(cmd: Command) -> i32 {
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
        } => listen(&url, &token, ca.as_deref(), since).await,
        Command::Keygen => keygen(),
        Command::CheckConfig { config, dev } => check_config(config.as_deref(), dev).await,
    }
}

fn print_config_errors(errs: &ConfigErrors) {
    for e in &errs.0 {
        eprintln!("error: {e}");
    }
}

/// Gather sources; with `dev`, prepare the data dir for the defaults.
fn load_config(file: Option<&Path>, dev: bool) -> Result<(Config, Option<DevFiles>), i32> {
    let src = Sources::gather(file).map_err(|e| {
        print_config_errors(&e);
        EXIT_USAGE
    })?;
    let (files, defaults) = if dev {
        match dev::prepare(&src.data_dir()) {
            Ok((f, d)) => (Some(f), Some(d)),
            Err(e) => {
                eprintln!("error: {e}");
                return Err(EXIT_USAGE);
            }
        }
    } else {
        (None, None)
    };
    let config = Config::from_sources(&src, dev, defaults.as_ref()).map_err(|e| {
        print_config_errors(&e);
        EXIT_USAGE
    })?;
    Ok((config, files))
}

pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
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

async fn serve(file: Option<&Path>, dev: bool) -> i32 {
    let (config, files) = match load_config(file, dev) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_tracing(config.log_format);
    let shutdown = match shutdown_signal() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return EXIT_RUNTIME;
        }
    };
    // A certificate that does not load or match its key is a configuration error.
    if let Err(e) = crate::tls::load_certified_key(&config.tls) {
        eprintln!("error: {e}");
        return EXIT_USAGE;
    }
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: CALLBRIDGE_LISTEN {}: cannot listen: {e}",
                config.listen
            );
            return EXIT_RUNTIME;
        }
    };
    if let Some(files) = &files {
        print_dev_banner(&config, files, &listener);
    }
    match crate::server::run(listener, config, shutdown).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_RUNTIME
        }
    }
}

fn print_dev_banner(config: &Config, files: &DevFiles, listener: &tokio::net::TcpListener) {
    let addr = listener.local_addr().unwrap_or(config.listen);
    let host = connect_host(addr);
    let token = match &config.jwt.key {
        JwtKey::Secret(s) => {
            crate::auth::mint(s, dev::DEMO_USER, None, 24 * 3600, crate::clock::now_secs())
                .unwrap_or_default()
        }
        JwtKey::Public { .. } => "<mint with your backend>".into(),
    };
    // The banner is for the operator's terminal, not the log: it carries a
    // dev token on purpose (24 h, demo user, dev secret).
    println!("callbridge dev mode");
    println!("  listening:   https://{host}  (wss://{host}/ws)");
    println!("  CA file:     {}", files.ca.display());
    println!("  data dir:    {}", files.dir.display());
    println!("  demo user:   {} ({})", dev::DEMO_USER, dev::DEMO_PHONE);
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
        "d" => 86400,
        _ => return None,
    };
    let secs = n.checked_mul(mult)?;
    (secs > 0).then_some(secs)
}

/// Sources plus the dev data dir defaults when it exists (or the env names nothing).
fn config_for_tools(
    file: Option<&Path>,
) -> Result<(Sources, Option<(DevFiles, DevDefaults)>), i32> {
    let src = Sources::gather(file).map_err(|e| {
        print_config_errors(&e);
        EXIT_USAGE
    })?;
    let dev = match dev::prepare(&src.data_dir()) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("warning: {e}");
            None
        }
    };
    Ok((src, dev))
}

fn token(user: &str, email: Option<&str>, ttl: &str, file: Option<&Path>) -> i32 {
    let Some(ttl) = parse_ttl(ttl) else {
        eprintln!("error: --ttl `{ttl}` is not a duration such as 90s, 30m, 1h, 7d");
        return EXIT_USAGE;
    };
    let src = match Sources::gather(file) {
        Ok(s) => s,
        Err(e) => {
            print_config_errors(&e);
            return EXIT_USAGE;
        }
    };
    let secret = match (src.get("jwt_secret"), src.get("jwt_public_key")) {
        (Some(s), _) => s.to_string(),
        (None, Some(_)) => {
            eprintln!(
                "error: CALLBRIDGE_JWT_PUBLIC_KEY is set: tokens are minted by the holder of the private key, not by callbridge"
            );
            return EXIT_USAGE;
        }
        (None, None) => match config_for_tools(file) {
            Ok((_, Some((_, d)))) => d.jwt_secret,
            Ok((_, None)) | Err(_) => {
                eprintln!("error: CALLBRIDGE_JWT_SECRET is not set and no dev data dir is usable");
                return EXIT_USAGE;
            }
        },
    };
    match crate::auth::mint(secret.as_bytes(), user, email, ttl, crate::clock::now_secs()) {
        Ok(t) => {
            println!("{t}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_RUNTIME
        }
    }
}

fn keygen() -> i32 {
    let (signer, pkcs8) = Signer::generate();
    let std = base64::engine::general_purpose::STANDARD;
    println!("public_key={}", std.encode(signer.public_key()));
    println!("private_key_pkcs8={}", std.encode(pkcs8));
    EXIT_OK
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

async fn simulate(
    event_type: &str,
    opts: SimOptions,
    url: Option<String>,
    file: Option<&Path>,
    config_file: Option<&Path>,
) -> i32 {
    let (src, dev) = match config_for_tools(config_file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some((files, _)) = dev else {
        eprintln!("error: the dev data dir is needed for the signing key (CALLBRIDGE_DATA_DIR)");
        return EXIT_USAGE;
    };
    let signer = match dev::load_signer(&files) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let payload = match file {
        None => None,
        Some(path) => match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
        {
            Ok(v @ Value::Object(_)) => Some(v),
            Ok(_) => {
                eprintln!("error: --file {}: not a JSON object", path.display());
                return EXIT_USAGE;
            }
            Err(e) => {
                eprintln!("error: --file {}: {e}", path.display());
                return EXIT_USAGE;
            }
        },
    };
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
    let tls = match crate::tls::client_config(ca.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let ts_s = ts.to_string();
    let headers = [
        ("content-type", "application/json"),
        (SIGNATURE_HEADER, sig.as_str()),
        (TIMESTAMP_HEADER, ts_s.as_str()),
    ];
    match crate::client::request_once(&url, "POST", &headers, body, tls).await {
        Ok(resp) => {
            println!("HTTP {}", resp.status);
            println!("{}", String::from_utf8_lossy(&resp.body));
            if (200..300).contains(&resp.status) {
                EXIT_OK
            } else {
                EXIT_RUNTIME
            }
        }
        Err(e) => {
            eprintln!("error: {url}: {e}");
            EXIT_RUNTIME
        }
    }
}

async fn listen(url: &str, token: &str, ca: Option<&Path>, since: Option<u64>) -> i32 {
    let ca_pem = match ca.map(std::fs::read).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --ca: {e}");
            return EXIT_USAGE;
        }
    };
    let tls = match crate::tls::client_config(ca_pem.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --ca: {e}");
            return EXIT_USAGE;
        }
    };
    let url = match since {
        Some(s) if url.contains('?') => format!("{url}&since={s}"),
        Some(s) => format!("{url}?since={s}"),
        None => url.to_string(),
    };
    let bearer = format!("Bearer {token}");
    let (mut ws, _) =
        match crate::client::ws_connect(&url, &[("authorization", bearer.as_str())], tls).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {url}: {e}");
                return EXIT_RUNTIME;
            }
        };
    let stdout = Arc::new(std::sync::Mutex::new(()));
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) => {
                let _g = stdout.lock();
                println!("{}", t.as_str());
            }
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                eprintln!("closed: {code} {reason}");
                return if code == 1000 { EXIT_OK } else { EXIT_RUNTIME };
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_RUNTIME;
            }
        }
    }
    eprintln!("closed: connection ended");
    EXIT_RUNTIME
}

async fn check_config(file: Option<&Path>, dev: bool) -> i32 {
    let (config, _) = match load_config(file, dev) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut failed = false;
    println!("ok: configuration parsed");
    match crate::tls::load_certified_key(&config.tls) {
        Ok(_) => println!(
            "ok: TLS certificate and key match ({})",
            config.tls.cert.display()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    }
    // The key was parsed with the configuration: a bad one is reported above.
    println!("ok: JWT verification key");
    match &config.mongodb_uri {
        None => println!("ok: store: embedded in-memory (CALLBRIDGE_MONGODB_URI not set; nothing survives a restart)"),
        Some(uri) => {
            match crate::store::mongo::MongoStore::connect_only(
                uri,
                &config.mongodb_db,
                config.history,
                config.store_timeout,
            )
            .await
            {
                Err(e) => {
                    eprintln!("error: CALLBRIDGE_MONGODB_URI: MongoDB not reachable: {e}");
                    failed = true;
                }
                Ok(store) => {
                    println!("ok: MongoDB reachable (database {})", config.mongodb_db);
                    match store.missing_indexes().await {
                        Ok(missing) if missing.is_empty() => println!("ok: MongoDB indexes in place"),
                        Ok(missing) => println!(
                            "note: MongoDB indexes not created yet (serve creates them at start): {}",
                            missing.join(", ")
                        ),
                        Err(e) => {
                            eprintln!("error: MongoDB indexes could not be listed: {e}");
                            failed = true;
                        }
                    }
                }
            }
        }
    }
    if failed {
        EXIT_RUNTIME
    } else {
        EXIT_OK
    }
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
}
