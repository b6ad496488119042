//! The route table (contract §3): every endpoint on the one TLS listener,
//! and where its handler lives. Handlers sit beside their types:
//! `webhook`, `probes`, the `/dev` and `/console` pages here, the admin
//! API in [`crate::api`], the WebSocket handshake beside the session
//! ([`crate::session::handshake`]).

mod console;
mod dev;
mod probes;
mod webhook;

use std::convert::Infallible;
use std::sync::Arc;

use warp::reply::Response;
use warp::Filter;

use crate::app::App;
use crate::error::recover;

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    webhook::route(app.clone())
        .or(crate::session::handshake::route(app.clone()))
        .unify()
        .or(probes::health(app.clone()))
        .unify()
        .or(probes::ready(app.clone()))
        .unify()
        .or(probes::metrics(app.clone()))
        .unify()
        .or(dev::routes(app.clone()))
        .unify()
        .or(console::route(app.clone()))
        .unify()
        .or(crate::api::routes(app))
        .unify()
        .recover(recover)
        .unify()
}
