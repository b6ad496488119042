#!/usr/bin/env bash
# Install the pinned SecantusDB (a MongoDB-wire-compatible server on
# WiredTiger, with replica-set semantics, transactions and change streams)
# into a local virtualenv, and print the path of its server binary.
# Usage: scripts/secantus.sh            -> prints the secantusd-py path
set -euo pipefail
cd "$(dirname "$0")/.."

SECANTUS_VERSION="0.7.0b3"   # pinned; bump deliberately
VENV="${CALLBRIDGE_VENV:-$PWD/.venv}"

installed() {
    "$VENV/bin/python" - "$SECANTUS_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("SecantusDB") == sys.argv[1] else 1)
PY
}

if ! installed; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "SecantusDB==$SECANTUS_VERSION" >&2
fi
echo "$VENV/bin/secantusd-py"
