//! `POST /api/reload` (contract §12): re-read the TLS certificate and key
//! now and say whether they were taken: `200 {"reloaded":true,"notAfter"}`,
//! or `409 reload-refused` naming the file and the problem, the previous
//! certificate still served. `callbridge reload` (systemd's `ExecReload=`)
//! calls this, so a broken renewal fails `systemctl reload` visibly.

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::app::App;
use crate::clock::rfc3339_ms;
use crate::http::{json_reply, reply, with_app};

pub(super) fn post(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("reload")
        .and(warp::post())
        .and(with_app(app))
        .map(|app: Arc<App>| {
            reply(
                crate::reload::reload(&app, "admin API")
                    .map(|r| {
                        let not_after = r.not_after.map(|s| rfc3339_ms(s * 1000));
                        json_reply(
                            StatusCode::OK,
                            &json!({"reloaded": true, "notAfter": not_after}),
                        )
                    })
                    .map_err(Into::into),
            )
        })
}
