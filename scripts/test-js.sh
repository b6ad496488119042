#!/usr/bin/env bash
# The dialer client package (clients/js) and the /dev page:
#   1. npm ci from the committed lockfile, the package's unit tests (node
#      --test against an in-process fake server) and its type tests;
#   2. the /dev page bundle rebuilt: the committed src/routes/dev_page.html
#      must be what the package's sources build (the daemon embeds it);
#   3. integration tests against the release daemon through a TCP proxy
#      that cuts and black-holes connections, and the /dev page in Debian's
#      Chromium driven by playwright-core (no browser is downloaded);
#   4. the bundle size (printed; the target is checked by eye, not here).
# Run by scripts/test.sh; alone: scripts/test-js.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian's chromium for the browser test"
        apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 ||
            { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }
    else
        echo "chromium is missing (apt-get install chromium)" >&2
        exit 1
    fi
fi

(cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm test)

echo "== /dev page bundle is up to date"
(cd clients/js && npm run --silent build:dev-page)
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git diff --quiet -- src/routes/dev_page.html ||
        { echo "src/routes/dev_page.html is stale: commit the rebuilt page" >&2; exit 1; }
fi

echo "== clients/js integration (release daemon) and browser (/dev in Chromium)"
cargo build --release --locked --bin callbridge
export CALLBRIDGE_ARTIFACTS="$PWD/target/artifacts"
(cd clients/js && npm run --silent test:integration)
echo "screenshot of /dev: $CALLBRIDGE_ARTIFACTS/dev-page.png"
(cd clients/js && npm run --silent size)
