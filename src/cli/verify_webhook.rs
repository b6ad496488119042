//! `callbridge verify-webhook`: check one received outbound webhook (§10)
//! the way a receiver using the `standardwebhooks` libraries would.

use std::path::{Path, PathBuf};

use super::{CliError, CliResult};

/// Check a received outbound webhook: its Standard Webhooks signature and timestamp.
///
/// Exit 0 when valid, 1 when the request does not verify (the reason on
/// stderr), 2 for unusable arguments. The secret is never printed.
#[derive(clap::Args, Debug)]
pub struct VerifyWebhook {
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
}

impl VerifyWebhook {
    pub fn run(self) -> CliResult {
        verify_webhook(&self.secret, &self.headers, &self.body, self.tolerance_secs)
    }
}

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

#[cfg(test)]
mod tests {
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
}
