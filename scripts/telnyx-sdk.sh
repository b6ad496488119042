#!/usr/bin/env bash
# Install the pinned official Telnyx SDK (PyPI `telnyx`, generated from
# Telnyx's OpenAPI spec) into the local virtualenv, and print the path of
# that virtualenv's python. tests/telnyx_sdk_check.py runs it against the
# test suite's Telnyx API stand-in (tests/it/telnyx_standin.rs).
# Usage: scripts/telnyx-sdk.sh          -> prints the python path
set -euo pipefail
cd "$(dirname "$0")/.."

TELNYX_SDK_VERSION="4.189.0"   # pinned; bump deliberately (and rerun the check)
VENV="${CALLBRIDGE_VENV:-$PWD/.venv}"

installed() {
    "$VENV/bin/python" - "$TELNYX_SDK_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("telnyx") == sys.argv[1] else 1)
PY
}

if ! installed; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "telnyx==$TELNYX_SDK_VERSION" >&2
fi
echo "$VENV/bin/python"
