//! `callbridge recover [--since T]`: ask the running daemon to read
//! Telnyx's delivery log now (`POST /api/recover`, contract §13) and print
//! the run's counts. Exit 0 when the run completed, 1 otherwise (recovery
//! off, another instance running it, Telnyx or the store failing).

use serde_json::json;

use super::admin::{pretty, AdminArgs, AdminClient};
use super::{CliError, CliResult};

/// Recover missed webhooks from Telnyx's delivery log now; prints the run's counts.
#[derive(clap::Args, Debug)]
pub struct Recover {
    /// Read failed deliveries that finished since this RFC 3339 time
    /// instead of since the stored checkpoint.
    #[arg(long, value_name = "RFC 3339")]
    since: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

impl Recover {
    pub async fn run(self) -> CliResult {
        if let Some(s) = &self.since {
            if crate::clock::parse_rfc3339_ms(s).is_none() {
                return Err(CliError::usage(format!(
                    "--since `{s}` is not an RFC 3339 time such as 2026-12-07T09:00:00Z"
                )));
            }
        }
        let client = AdminClient::new(&self.admin)?;
        let body = self.since.as_ref().map(|s| json!({ "since": s }));
        let resp = client.call("POST", "/api/recover", body.as_ref()).await?;
        println!("{}", pretty(&resp.body));
        Ok(())
    }
}
