//! The `callbridge` command line (contract §1), one file per command, the
//! way mini-redis keeps one file per command in `src/cmd/`: each file holds
//! the command's arguments (a clap `Args` struct) and its `run`. Exit codes:
//! 0 success, 2 bad usage or invalid configuration, 1 runtime failure.
//! Every command returns `Result<(), CliError>`; [`main`] prints the error
//! and picks the exit code, in one place.

mod admin;
mod check_config;
mod endpoints;
mod keygen;
mod listen;
mod recover;
mod reload;
mod serve;
mod simulate;
mod token;
mod verify_webhook;

use std::path::Path;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigErrors, DevDefaults, Sources};
use crate::dev::{self, DevFiles};

pub use serve::init_tracing;
pub use simulate::{build_envelope, SimOptions};
pub use token::parse_ttl;

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
    Serve(serve::Serve),
    Token(token::Token),
    Simulate(simulate::Simulate),
    Listen(listen::Listen),
    Keygen(keygen::Keygen),
    CheckConfig(check_config::CheckConfig),
    VerifyWebhook(verify_webhook::VerifyWebhook),
    Endpoints(endpoints::Endpoints),
    Reload(reload::Reload),
    Recover(recover::Recover),
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
        Command::Serve(c) => c.run().await,
        Command::Token(c) => c.run(),
        Command::Simulate(c) => c.run().await,
        Command::Listen(c) => c.run().await,
        Command::Keygen(c) => {
            c.run();
            Ok(())
        }
        Command::CheckConfig(c) => c.run().await,
        Command::VerifyWebhook(c) => c.run(),
        Command::Endpoints(c) => c.run().await,
        Command::Reload(c) => c.run().await,
        Command::Recover(c) => c.run().await,
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

/// The host to connect to for a listen address (an unspecified address
/// means this host: 127.0.0.1).
pub(crate) fn connect_host(addr: std::net::SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("{ip}:{}", addr.port())
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

#[cfg(test)]
mod tests {
    use super::*;

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
