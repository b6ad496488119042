#!/usr/bin/env bash
# Install the pinned jwcrypto (PyPI `jwcrypto`, a JOSE implementation: JWK,
# JWS, JWT) into the local virtualenv, and print the path of that
# virtualenv's python. tests/jose_provider.py runs with it: it makes keys,
# JWKS documents and tokens as an identity provider would, for the tests of
# dialer tokens verified against a JWKS (contract §15, tests/common/jwks.rs).
# Usage: scripts/jose.sh                -> prints the python path
set -euo pipefail
cd "$(dirname "$0")/.."

JWCRYPTO_VERSION="1.6.1"   # pinned; bump deliberately (and rerun jose_tooling)
VENV="${CALLBRIDGE_VENV:-$PWD/.venv}"

installed() {
    "$VENV/bin/python" - "$JWCRYPTO_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("jwcrypto") == sys.argv[1] else 1)
PY
}

if ! installed; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "jwcrypto==$JWCRYPTO_VERSION" >&2
fi
echo "$VENV/bin/python"
