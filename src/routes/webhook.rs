//! `POST /webhooks/telnyx`: the HTTP edge of the webhook path. The body is
//! read with its limit and handed, with the signature headers, to
//! [`crate::webhook::handle`] (verify → normalize → route → store → hub).

use std::sync::Arc;
use std::time::Instant;

use bytes::Buf;
use futures_util::Stream;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::app::App;
use crate::error::ApiError;
use crate::http::{content_length_over, json_reply, read_limited, reply, with_app};
use crate::metrics::Metrics;
use crate::telnyx::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::webhook::{self, Ack, MAX_BODY};

pub(super) fn route(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("webhooks" / "telnyx")
        .and(warp::post())
        .and(with_app(app))
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(|app: Arc<App>, headers: HeaderMap, body| async move {
            reply(handler(app, headers, body).await)
        })
}

async fn handler<S, B>(app: Arc<App>, headers: HeaderMap, body: S) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let received = Instant::now();
    let result = accept(&app, &headers, body, received).await;
    let outcome = match &result {
        Ok(ack) if ack.duplicate => "duplicate",
        Ok(_) => "stored",
        Err(e) => e.code(),
    };
    app.metrics.webhook(outcome);
    match result {
        Ok(ack) => {
            Metrics::observe_since(&app.metrics.webhook_latency, received);
            Ok(json_reply(StatusCode::OK, &ack))
        }
        Err(e) => {
            if e.status().is_client_error() {
                tracing::info!(error = %e, "webhook refused");
            }
            Err(e)
        }
    }
}

async fn accept<S, B>(
    app: &Arc<App>,
    headers: &HeaderMap,
    body: S,
    received: Instant,
) -> Result<Ack, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if app.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    if content_length_over(headers, MAX_BODY) {
        return Err(ApiError::TooLarge(MAX_BODY));
    }
    let body = read_limited(body, MAX_BODY).await?;
    let sig = headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
    let ts = headers.get(TIMESTAMP_HEADER).map(|v| v.as_bytes());
    webhook::handle(app, sig, ts, body, received).await
}
