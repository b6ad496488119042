//! The one wall clock of the daemon: Unix milliseconds and seconds, and
//! RFC 3339 text with millisecond precision (what every `ts` field carries).
//! A real clock everywhere: tests compare against it with margins.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Whole seconds since the Unix epoch (JWT `iat`/`exp`, revocation).
pub fn now_secs() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, as RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    rfc3339_ms(now_ms())
}

/// `ms` since the epoch as RFC 3339 in UTC (the epoch itself if out of range).
pub fn rfc3339_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(&Rfc3339).unwrap_or_default()
}

/// RFC 3339 text → ms since the epoch (rounded down).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let nanos = OffsetDateTime::parse(s, &Rfc3339)
        .ok()?
        .unix_timestamp_nanos();
    i64::try_from(nanos.div_euclid(1_000_000)).ok()
}
