//! `callbridge token --user ID [--email E] [--ttl 1h]`: a dialer JWT signed
//! with the configured secret (or the dev data dir's).

use std::path::{Path, PathBuf};

use super::{dev_data, CliError, CliResult};
use crate::config::Sources;

/// Print a JWT for a dialer user, signed with the configured secret.
#[derive(clap::Args, Debug)]
pub struct Token {
    #[arg(long)]
    user: String,
    #[arg(long)]
    email: Option<String>,
    /// Lifetime: 90s, 30m, 1h, 7d, or plain seconds.
    #[arg(long, default_value = "1h")]
    ttl: String,
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Token {
    pub fn run(self) -> CliResult {
        token(
            &self.user,
            self.email.as_deref(),
            &self.ttl,
            self.config.as_deref(),
        )
    }
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
    let claim = src.get("jwt_user_claim").unwrap_or("sub");
    let t = crate::auth::mint_for(
        secret.as_bytes(),
        claim,
        user,
        email,
        ttl,
        crate::clock::now_secs(),
    )
    .map_err(CliError::runtime)?;
    println!("{t}");
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
}
