//! The one MongoDB policy of the test suite.
//!
//! `scripts/test.sh` starts SecantusDB (a MongoDB-wire server) and exports
//! `CALLBRIDGE_TEST_MONGODB_URI` and `CALLBRIDGE_TEST_SECANTUSD` (its server
//! binary), then runs the suite twice: `CALLBRIDGE_TEST_STORE=mongodb`, then
//! `CALLBRIDGE_TEST_STORE=memory`.
//!
//! - [`mongo_uri`]: the store of the harness's daemons ([`super::Server`]):
//!   MongoDB under `mongodb`, the embedded store under `memory`.
//! - [`mongo_required`] and [`secantusd`]: tests that exist to test MongoDB
//!   itself (the store conformance suite's MongoDB half, several instances on
//!   one database, an outage). They run whenever a server is there, under
//!   either store choice.
//!
//! Whatever needs MongoDB and does not find it FAILS in CI (`CI` set) and
//! under `CALLBRIDGE_TEST_STORE=mongodb`; only a developer's plain
//! `cargo test` skips it, saying so on stderr.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

const URI_VAR: &str = "CALLBRIDGE_TEST_MONGODB_URI";
const SECANTUSD_VAR: &str = "CALLBRIDGE_TEST_SECANTUSD";
const STORE_VAR: &str = "CALLBRIDGE_TEST_STORE";

fn store_choice() -> Option<String> {
    std::env::var(STORE_VAR).ok()
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// `CALLBRIDGE_TEST_MONGODB_URI`, when set and not empty.
fn configured_uri() -> Option<String> {
    std::env::var(URI_VAR).ok().filter(|s| !s.is_empty())
}

/// Something a test needs from `scripts/test.sh` is missing: fail in CI and
/// under `CALLBRIDGE_TEST_STORE=mongodb`, else say what is not run.
fn missing(var: &str, what: &str) {
    assert!(
        !in_ci(),
        "{var} is not set in CI: run the suite with scripts/test.sh ({what})"
    );
    assert!(
        store_choice().as_deref() != Some("mongodb"),
        "CALLBRIDGE_TEST_STORE=mongodb but {var} is not set ({what})"
    );
    eprintln!("{var} not set: {what} not run (use scripts/test.sh)");
}

/// The MongoDB URI the daemons of the integration tests use: set by
/// `scripts/test.sh`, unless `CALLBRIDGE_TEST_STORE=memory` asks for the
/// embedded store. In CI a missing URI is an error, never a silent skip.
pub fn mongo_uri() -> Option<String> {
    match store_choice().as_deref() {
        Some("memory") => None,
        Some("mongodb") => {
            Some(configured_uri().unwrap_or_else(|| {
                panic!("CALLBRIDGE_TEST_STORE=mongodb but {URI_VAR} is not set")
            }))
        }
        Some(_) => configured_uri(),
        None => {
            let uri = configured_uri();
            assert!(
                uri.is_some() || !in_ci(),
                "{URI_VAR} is not set in CI: run the suite with scripts/test.sh"
            );
            uri
        }
    }
}

/// The URI for a test of MongoDB itself (`what` names it for the skip
/// message); `None` only outside CI and outside `CALLBRIDGE_TEST_STORE=mongodb`.
pub fn mongo_required(what: &str) -> Option<String> {
    let uri = configured_uri();
    if uri.is_none() {
        missing(URI_VAR, what);
    }
    uri
}

/// The SecantusDB server binary, for tests that run their own database;
/// the same rule as [`mongo_required`].
pub fn secantusd(what: &str) -> Option<PathBuf> {
    match std::env::var(SECANTUSD_VAR) {
        Ok(p) if Path::new(&p).exists() => Some(PathBuf::from(p)),
        _ => {
            missing(SECANTUSD_VAR, what);
            None
        }
    }
}
