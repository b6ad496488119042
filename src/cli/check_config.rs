//! `callbridge check-config [--config FILE] [--dev]`: is this configuration
//! usable? Exit 0 when it is, 2 for a bad setting, 1 when the store cannot
//! be reached; one line per check.

use std::path::{Path, PathBuf};

use super::{load_config, CliError, CliResult};
use crate::config::Config;

/// Validate configuration, certificate and key, key formats and store reachability.
#[derive(clap::Args, Debug)]
pub struct CheckConfig {
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    dev: bool,
}

impl CheckConfig {
    pub async fn run(self) -> CliResult {
        check_config(self.config.as_deref(), self.dev).await
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
    if config.jwt.key.is_some() {
        println!("ok: JWT verification key");
    }
    if let Some(url) = &config.jwt.jwks_url {
        check_jwks(url).await?;
    }
    match &config.mongodb_uri {
        None => {
            println!("ok: store: embedded in-memory (CALLBRIDGE_MONGODB_URI not set; nothing survives a restart)");
        }
        Some(uri) => check_mongodb(&config, uri).await?,
    }
    check_telnyx_api(&config).await
}

/// The identity provider's JWKS: fetched once, its keys listed (contract §15).
async fn check_jwks(url: &str) -> CliResult {
    let jwks = crate::jwks::Jwks::new(url, Default::default(), Default::default());
    match jwks.fetch().await {
        Ok(max_age) => {
            let keys = jwks.keys();
            if keys.is_empty() {
                return Err(CliError::usage(format!(
                    "CALLBRIDGE_JWT_JWKS_URL: {url} holds no usable signing key \
                     (RS*, PS*, ES256/384 or EdDSA)"
                )));
            }
            println!(
                "ok: JWKS {url}: {} key(s): {}; refreshed every {}s",
                keys.len(),
                crate::jwks::describe(&keys).join(", "),
                max_age.as_secs()
            );
            Ok(())
        }
        Err(e @ crate::jwks::JwksError::Document(_)) => Err(CliError::usage(format!(
            "CALLBRIDGE_JWT_JWKS_URL: {url}: {e}"
        ))),
        Err(e) => Err(CliError::runtime(format!(
            "CALLBRIDGE_JWT_JWKS_URL: {url}: {e}"
        ))),
    }
}

/// Whether the Telnyx API key works (one cheap authenticated request: a
/// page of one failed delivery), and what recovery will do.
async fn check_telnyx_api(config: &Config) -> CliResult {
    let Some(client) = crate::telnyx::api::Client::new(&config.telnyx_api) else {
        println!(
            "note: CALLBRIDGE_TELNYX_API_KEY is not set: recovery of missed webhooks \
             and call actions are off"
        );
        return Ok(());
    };
    let since = crate::clock::rfc3339_ms(crate::clock::now_ms() - 3_600_000);
    let q = crate::telnyx::api::deliveries::FailedSince {
        finished_gte: &since,
        finished_lte: None,
        page_number: 1,
        page_size: 1,
    };
    match client.failed_deliveries(&q).await {
        Ok(page) => println!(
            "ok: Telnyx API key works ({}; {} failed deliveries in the last hour)",
            client.base(),
            page.meta
                .total_results
                .map_or("?".into(), |n| n.to_string())
        ),
        Err(e @ crate::telnyx::api::TelnyxError::Unauthorized { .. }) => {
            return Err(CliError::usage(format!("CALLBRIDGE_TELNYX_API_KEY: {e}")))
        }
        Err(e) => return Err(CliError::runtime(format!("{}: {e}", client.base()))),
    }
    match config.recovery {
        Some(r) => println!(
            "ok: recovery on: every {}s, from the stored checkpoint (less 10 min), \
             or {}h back on the first run ever",
            r.interval.as_secs(),
            r.lookback.as_secs() / 3600
        ),
        None => println!("note: recovery off (CALLBRIDGE_RECOVERY=off)"),
    }
    Ok(())
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
