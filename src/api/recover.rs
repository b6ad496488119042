//! `POST /api/recover` (contract §13): run recovery now, and answer when
//! the run is done with its counts: `200 {"fetched","ingested",
//! "duplicates","skipped","checkpoint"}`. The optional body
//! `{"since":"<RFC 3339>"}` reads the log from there instead of the
//! checkpoint. `409` when recovery is off or another instance runs it;
//! `503` when Telnyx refuses or fails, or the store is away.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{brief, Result, MAX_ADMIN_BODY};
use crate::app::App;
use crate::clock::parse_rfc3339_ms;
use crate::error::ApiError;
use crate::http::{json_reply, read_limited, reply, with_app};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
    #[serde(default)]
    since: Option<String>,
}

pub(super) fn post(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("recover")
        .and(warp::post())
        .and(with_app(app))
        .and(warp::body::stream())
        .then(|app: Arc<App>, body| async move {
            let answer = async {
                let body = read_limited(body, MAX_ADMIN_BODY).await?;
                recover(&app, &body).await
            };
            reply(answer.await)
        })
}

async fn recover(app: &App, body: &Bytes) -> Result<Response> {
    let since = parse_since(body)?;
    let report = app.recovery.request(since).await?;
    Ok(json_reply(StatusCode::OK, &report))
}

/// An empty body, `{}`, or `{"since":"<RFC 3339>"}` not in the future.
fn parse_since(body: &[u8]) -> Result<Option<i64>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let bad = |why: String| ApiError::BadRequest(format!("bad recover body: {why}"));
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(brief(&e)))?;
    if !v.is_object() {
        return Err(bad("not a JSON object".into()));
    }
    let b: RecoverBody = serde_json::from_value(v).map_err(|e| bad(brief(&e)))?;
    let Some(raw) = b.since else {
        return Ok(None);
    };
    let ms = parse_rfc3339_ms(&raw).ok_or_else(|| {
        ApiError::BadRequest("`since` must be an RFC 3339 time such as 2026-12-07T09:00:00Z".into())
    })?;
    if ms > crate::clock::now_ms() {
        return Err(ApiError::BadRequest("`since` is in the future".into()));
    }
    Ok(Some(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        assert_eq!(parse_since(b"").unwrap(), None);
        assert_eq!(parse_since(b" {} ").unwrap(), None);
        assert_eq!(
            parse_since(br#"{"since":"2026-12-07T09:00:00Z"}"#).unwrap(),
            Some(1_796_634_000_000)
        );
        assert!(parse_since(br#"{"since":"yesterday"}"#).is_err());
        assert!(parse_since(br#"{"since":"2999-01-01T00:00:00Z"}"#).is_err());
        assert!(parse_since(br#"{"from":"2026-12-07T09:00:00Z"}"#).is_err());
        assert!(parse_since(b"[]").is_err());
    }
}
