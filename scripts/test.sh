#!/usr/bin/env bash
# The whole test suite: unit tests, the Store conformance suite on both
# backends, and the integration tests (real server on port 0, real TLS, real
# WebSocket and HTTPS clients) once on the embedded store and once on MongoDB;
# then the README's commands, the client package (clients/js) and the
# deployment scripts.
#
# MongoDB is SecantusDB (pinned, installed into .venv by scripts/secantus.sh),
# started here on a free loopback port and stopped on exit. The official
# Telnyx SDK (pinned, scripts/telnyx-sdk.sh) and jwcrypto (pinned,
# scripts/jose.sh) go into the same .venv.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

SECANTUSD="$(scripts/secantus.sh)"
export CALLBRIDGE_TEST_SECANTUSD="$SECANTUSD"
# The official Telnyx SDK (pinned, same virtualenv): tests/telnyx_sdk_check.py
# checks the tests' Telnyx API stand-in with it (tests/it/telnyx_standin.rs).
TELNYX_PYTHON="$(scripts/telnyx-sdk.sh)"
export CALLBRIDGE_TEST_TELNYX_PYTHON="$TELNYX_PYTHON"
# jwcrypto (pinned, same virtualenv, scripts/jose.sh): tests/jose_provider.py
# makes an identity provider's keys, JWKS and tokens (tests/common/jwks.rs).
JOSE_PYTHON="$(scripts/jose.sh)"
export CALLBRIDGE_TEST_JOSE_PYTHON="$JOSE_PYTHON"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp -t secantus.XXXXXX.log)"
"$SECANTUSD" --port "$port" --storage-path :memory: >"$log" 2>&1 &
db_pid=$!
cleanup() {
    kill "$db_pid" 2>/dev/null || true
    wait "$db_pid" 2>/dev/null || true
}
trap cleanup EXIT

export CALLBRIDGE_TEST_MONGODB_URI="mongodb://127.0.0.1:${port}/?replicaSet=secantus"
for _ in $(seq 1 150); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $port)))"; then
        break
    fi
    if ! kill -0 "$db_pid" 2>/dev/null; then
        echo "SecantusDB exited:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.2
done
echo "SecantusDB $(basename "$(dirname "$(dirname "$SECANTUSD")")") on port $port (pid $db_pid)"

# 0. Lints, warnings as errors; among them clippy::too_many_lines at 80
#    (clippy.toml): every function fits on a screen.
echo "== cargo clippy (warnings are errors; functions of at most 80 lines)"
cargo clippy --locked --all-targets -- -D warnings
# 1. Everything, with the integration tests' daemons on MongoDB.
echo "== cargo test (integration tests on MongoDB)"
CALLBRIDGE_TEST_STORE=mongodb cargo test --locked --no-fail-fast --all-targets "$@"
# 2. The integration tests again on the embedded store.
echo "== cargo test --tests (integration tests on the embedded store)"
CALLBRIDGE_TEST_STORE=memory cargo test --locked --no-fail-fast --tests "$@"
# 3. The README's set-up and tour commands, as written, on a copy of the
#    tracked files (builds the release daemon scripts/test-js.sh reuses).
echo "== scripts/test-readme.sh (the README's Set up and Quick tour, as written)"
scripts/test-readme.sh
# 4. The dialer client package and the /dev page (npm ci, unit tests,
#    integration tests on the release daemon, Chromium): scripts/test-js.sh.
echo "== scripts/test-js.sh (clients/js: unit, integration, /dev in Chromium)"
scripts/test-js.sh
# 5. Deployment: systemd unit, deploy.sh, certbot hook, renewal under a
#    running daemon (pebble on loopback). Needs root and apt (CI has both).
echo "== scripts/test-deploy.sh (unit, deploy.sh, certbot hook, live renewal)"
scripts/test-deploy.sh
