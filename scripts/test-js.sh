#!/usr/bin/env bash
# The dialer client package (clients/js), the /dev page and the /console page:
#   1. npm ci from the committed lockfile, the package's unit tests (node
#      --test against an in-process fake server) and its type tests (the
#      package's, the /dev page's and the console's);
#   2. the /dev and /console page bundles rebuilt: the committed
#      src/routes/dev_page.html and src/routes/console_page.html must be
#      what the sources build (the daemon embeds them);
#   3. integration tests against the release daemon through a TCP proxy
#      that cuts and black-holes connections, and the /dev and /console
#      pages in Debian's Chromium driven by playwright-core (no browser is
#      downloaded);
#   4. the bundle sizes (printed; the target is checked by eye, not here).
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

echo "== /console page bundle is up to date"
(cd clients/js && npm run --silent build:console-page)
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git diff --quiet -- src/routes/console_page.html ||
        { echo "src/routes/console_page.html is stale: commit the rebuilt page" >&2; exit 1; }
fi

echo "== clients/js integration (release daemon) and browser (/dev and /console in Chromium)"
cargo build --release --locked --bin callbridge
export CALLBRIDGE_ARTIFACTS="$PWD/target/artifacts"
(cd clients/js && npm run --silent test:integration)
echo "screenshots: $CALLBRIDGE_ARTIFACTS/dev-page.png, $CALLBRIDGE_ARTIFACTS/dev-page-actions.png, $CALLBRIDGE_ARTIFACTS/console-page.png"
(cd clients/js && npm run --silent size)
