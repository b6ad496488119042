//! The integration tests, as one test binary (one link of the daemon and its
//! dependencies instead of one per file). Each file here is a module; run
//! one with e.g. `cargo test --test it ws_auth::`.
//!
//! Two suites stay binaries of their own, because they touch the whole
//! process: `tests/tls_reload.rs` sends SIGHUP to the test process (every
//! in-process daemon would reload), and `tests/slow_consumer.rs` measures
//! the process's RSS. Shared helpers live in `tests/common/`.

#[path = "../common/mod.rs"]
mod common;

mod actions;
mod admin;
mod cli;
mod console;
mod dev_telnyx;
mod fan_out;
mod jose_tooling;
mod jwks;
mod lifecycle;
mod limits;
mod messages;
mod mongo_outage;
mod multi_instance;
mod normalization;
mod outbound;
mod outbound_cli;
mod props;
mod recovery;
mod robustness;
mod routing;
mod signing;
mod smoke;
mod store_conformance;
pub(crate) mod telnyx_standin;
mod webhooks;
mod ws_auth;
mod ws_protocol;
