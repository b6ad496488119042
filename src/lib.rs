//! callbridge: verifies Telnyx Call Control webhooks, normalizes them into
//! small JSON events, routes them to dialer users, stores them and pushes them
//! over `wss://` to those users' authenticated sessions.
//!
//! Data flows one way: webhook → verify ([`telnyx`]) → normalize
//! ([`normalize`]) → route ([`routing`]) → store ([`store`]) → hub ([`hub`])
//! → sessions ([`session`]). [`server::run`] takes an already-bound listener
//! and a shutdown future, so tests start the real server on port 0.

// Functions fit on a screen: at most 80 lines of code (clippy.toml).
#![warn(clippy::too_many_lines)]

pub mod actions;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod dev;
pub mod domain;
pub mod errlog;
pub mod error;
pub mod http;
pub mod httpc;
pub mod hub;
pub mod jwks;
pub mod jwt;
pub mod messages;
pub mod metrics;
pub mod normalize;
pub mod outbound;
pub mod protocol;
pub mod rates;
pub mod recovery;
pub mod reload;
pub mod routes;
pub mod routing;
pub mod server;
pub mod session;
pub mod signals;
pub mod signing;
pub mod store;
pub mod systemd;
pub mod telnyx;
pub mod tls;
pub mod webhook;

pub use server::run;
