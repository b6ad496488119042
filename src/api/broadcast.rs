//! `POST /api/broadcast`: a custom message to some users' sessions, or to
//! everyone's, on every instance.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{apply_everywhere, brief, Result, MAX_ADMIN_BODY};
use crate::app::App;
use crate::domain::Control;
use crate::error::ApiError;
use crate::http::{json_reply, read_limited, reply, with_app};

/// Longest custom event name accepted.
const MAX_EVENT_NAME: usize = 64;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Broadcast {
    #[serde(default)]
    user_ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
    event: String,
    #[serde(default)]
    data: Option<Value>,
}

pub(super) fn post(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("broadcast")
        .and(warp::post())
        .and(with_app(app))
        .and(warp::body::stream())
        .then(|app: Arc<App>, body| async move {
            let answer = async {
                let body = read_limited(body, MAX_ADMIN_BODY).await?;
                handle(app, body).await
            };
            reply(answer.await)
        })
}

async fn handle(app: Arc<App>, body: Bytes) -> Result<Response> {
    let req: Broadcast = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid broadcast body: {}", brief(&e))))?;
    let event = req.event.trim();
    if event.is_empty() || event.len() > MAX_EVENT_NAME {
        return Err(ApiError::BadRequest(
            "`event` must be a non-empty name".into(),
        ));
    }
    let frame = crate::protocol::custom_frame(event, &req.data.unwrap_or(json!({})));
    let users = match (req.all, req.user_ids) {
        (true, None) => None,
        (false, Some(ids)) => Some(ids),
        _ => {
            return Err(ApiError::BadRequest(
                "give either `userIds` or `\"all\": true`".into(),
            ))
        }
    };
    // `delivered` counts this instance's connections; other instances
    // deliver through the store's feed.
    let delivered = apply_everywhere(&app, Control::Broadcast { users, frame }).await?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "delivered": delivered }),
    ))
}
