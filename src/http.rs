//! What every HTTP handler shares: the app handle as a warp filter, turning
//! a handler's result into the response, JSON replies, and bodies read
//! with a limit. A leaf module: the route table and the handlers use it;
//! it uses none of them.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::app::App;
use crate::error::ApiError;

/// The shared state, for every handler.
pub fn with_app(app: Arc<App>) -> impl Filter<Extract = (Arc<App>,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// A handler's result as the response: errors become their JSON (see `error`).
pub fn reply(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(|e| e.into_response())
}

pub fn json_reply(status: StatusCode, v: &impl serde::Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

/// Read a body, refusing it (413) as soon as it passes `limit`, whether or
/// not it announced a Content-Length.
pub async fn read_limited<S, B>(body: S, limit: usize) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    futures_util::pin_mut!(body);
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|_| ApiError::BadRequest("request body could not be read".into()))?;
        if out.len() + chunk.remaining() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// A Content-Length over the limit is refused before reading anything.
pub fn content_length_over(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}
