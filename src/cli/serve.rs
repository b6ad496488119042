//! `callbridge serve [--config FILE] [--dev]`: run the daemon until SIGTERM
//! or SIGINT, then shut down gracefully (exit 0).

use std::path::{Path, PathBuf};

use super::{connect_host, load_config, CliError, CliResult};
use crate::config::{Config, LogFormat};
use crate::dev::{self, DevFiles};

/// Run the daemon.
#[derive(clap::Args, Debug)]
pub struct Serve {
    /// TOML file with the same keys as the environment, lower case, without prefix.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Zero-setup mode: generated certificate, keys and secret in CALLBRIDGE_DATA_DIR.
    #[arg(long)]
    dev: bool,
}

impl Serve {
    pub async fn run(self) -> CliResult {
        serve(self.config.as_deref(), self.dev).await
    }
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
    // The program as it was started (`target/release/callbridge` under
    // `cargo run`), so the lines below run when pasted.
    let prog = std::env::args()
        .next()
        .filter(|p| !p.is_empty() && !p.contains(char::is_whitespace))
        .unwrap_or_else(|| "callbridge".into());
    println!("connect a dialer:");
    println!(
        "  {prog} listen --url wss://{host}/ws --ca {} --token {token}",
        files.ca.display()
    );
    println!("send a call:");
    println!("  {prog} simulate call.initiated --to {}", dev::DEMO_PHONE);
}
