//! `callbridge reload`: ask the running daemon to re-read its certificate
//! and key (`POST /api/reload`, contract §12). Exit 0 when the new
//! certificate is in service, 1 when the daemon refused it (the old one
//! still serves) or could not be reached: systemd's `ExecReload=` runs
//! this, so `systemctl reload callbridge` fails on a broken renewal.

use super::admin::{AdminArgs, AdminClient};
use super::{CliError, CliResult};

/// Ask the running daemon to reload its TLS certificate and key (exit 1 if it refuses).
#[derive(clap::Args, Debug)]
pub struct Reload {
    #[command(flatten)]
    admin: AdminArgs,
}

impl Reload {
    pub async fn run(self) -> CliResult {
        let client = AdminClient::new(&self.admin)?;
        let resp = client.send("POST", "/api/reload", None).await?;
        let answer = resp.json();
        let text = |key: &str| answer[key].as_str().unwrap_or("?").to_string();
        match resp.status {
            200 => {
                println!("reloaded: certificate valid until {}", text("notAfter"));
                Ok(())
            }
            409 => Err(CliError::runtime(format!(
                "reload refused: {}",
                text("message")
            ))),
            status => Err(CliError::runtime(format!(
                "POST /api/reload: HTTP {status}: {}",
                String::from_utf8_lossy(&resp.body).trim()
            ))),
        }
    }
}
