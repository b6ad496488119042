#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests (real server on port 0,
# real TLS, real WebSocket and HTTPS clients) and the CLI end-to-end tests.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Two cores: one test binary at a time keeps the parallel tests inside each
# binary from starving each other.
cargo test --locked --all-targets -- --test-threads=4 "$@"
