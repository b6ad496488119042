#!/usr/bin/env bash
# Offline test of the deployment: the systemd unit, deploy.sh, the certbot
# deploy hook and certificate renewals (good and broken) under a running
# daemon.
#
#  1. shellcheck on every script in scripts/
#  2. systemd-analyze verify (clean) and security --offline=yes (exposure
#     at most 1.4) on systemd/callbridge.service; the unit is Type=notify
#     with ExecReload=/usr/local/bin/callbridge reload, and the repository
#     has no Type=notify-reload drop-in any more; the env template names
#     every variable of the README's configuration table
#  3. deploy.sh: --help, --dry-run changes nothing, clear failures for not
#     root, missing domain, busy HTTP-01 port and a failing certbot
#  4. pebble (Debian's package, throwaway CA, PEBBLE_VA_ALWAYS_VALID=1) on
#     loopback; `deploy.sh --cert-only` against it with certbot's
#     config/work/logs and the TLS directory in a temp dir; a second run
#     changes nothing
#  5. callbridge serve on the issued certificate (no MongoDB, no polling of
#     the files), a dialer (`callbridge listen`) connected over wss;
#     `certbot renew --force-renewal` runs the installed hook with --pid
#     and no admin token: it copies the new certificate and sends SIGHUP
#     ("outcome not checked"); the daemon must serve the new serial while
#     the dialer's WebSocket stays open. A second renewal with the admin
#     token: the hook runs `callbridge reload` and reports the new
#     notAfter. A broken renewal (an Ed448 key, which openssl accepts and
#     callbridge does not) through the hook: the hook exits 1 with the
#     daemon's reason, the previous serial is still served
#  6. testssl.sh (Debian's package) against that daemon on loopback:
#     protocols, cipher categories, server cipher order, forward secrecy and
#     vulnerabilities (`--fast -p -s -P -f -U`); any HIGH or CRITICAL finding
#     fails. Not -S: the certificate is pebble's test certificate, whose
#     trust, lifetime and revocation findings say nothing about the daemon.
#  7. the full deploy.sh (user, env file with an admin token, binary, unit,
#     start, health, renewal through systemctl reload, re-run, upgrade,
#     rollback of a failed upgrade, removal of the notify-reload drop-in an
#     earlier version installed, a kept env file without admin token warned
#     about, failed check-config) in a private mount namespace over copies
#     of /etc, /usr/local and /var/log, with a stand-in systemctl (systemd
#     need not be PID 1) whose `reload` runs the unit's ExecReload= as the
#     service user with its EnvironmentFile and fails when it fails, as
#     systemd does for Type=notify. There, a broken renewal (a key that does
#     not match the certificate in /etc/callbridge/tls): `systemctl reload
#     callbridge` exits 1, the journal stand-in has the daemon's
#     reload-refused reason, the previous serial is still served,
#     callbridge_tls_reload_failures_total went up; the same through the
#     certbot hook (exit 1, pointing to journalctl -u callbridge); then a
#     proper renewal: `systemctl reload` exits 0 and the new serial is
#     served by the same process
#
# Needs root (the hook sets owners) and apt for pebble, certbot, shellcheck
# and testssl.sh when missing. Changes nothing outside a temp dir except those packages.
# Usage: scripts/test-deploy.sh    (env CALLBRIDGE_BIN: use this binary
# instead of `cargo build --bins`; KEEP_TMP=1: keep the temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
started=$SECONDS

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
step() { echo "== $*"; }

[ "$(id -u)" = 0 ] || fail "run as root (the deploy hook sets file owners; packages come from apt)"

# ---------------------------------------------------------------- packages
step "packages"
missing=()
command -v pebble >/dev/null || missing+=(pebble)
command -v certbot >/dev/null || missing+=(certbot)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v python3 >/dev/null || missing+=(python3)
command -v testssl >/dev/null || command -v testssl.sh >/dev/null || missing+=(testssl.sh)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian installs it as testssl, upstream as testssl.sh.
testssl="$(command -v testssl || command -v testssl.sh)"
ok "pebble, certbot $(certbot --version 2>&1 | awk '{print $2}'), shellcheck $(shellcheck --version | awk '/^version/{print $2}'), $(systemd-analyze --version | head -n1), testssl $("$testssl" --version 2>/dev/null | sed -n 's/.*testssl *\([0-9][0-9.]*\).*/\1/p' | head -n1)"

# ------------------------------------------------------------- the binary
if [ -n "${CALLBRIDGE_BIN:-}" ]; then
    bin="$CALLBRIDGE_BIN"
else
    step "cargo build --bins"
    cargo build --locked --bins --quiet
    bin="$repo/target/debug/callbridge"
fi
[ -x "$bin" ] || fail "no binary at $bin"

tmp="$(mktemp -d -t callbridge-deploy-test.XXXXXX)"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# until TIMEOUT_SECS CMD...: retry CMD every 0.2 s
until_ok() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
expect_fail() { # CODE PATTERN CMD... : CMD exits CODE and prints PATTERN
    local code="$1" pattern="$2" rc=0 out; shift 2
    out="$("$@" 2>&1)" || rc=$?
    if [ "$rc" != "$code" ] || ! grep -qiE -- "$pattern" <<<"$out"; then
        echo "$out" >&2
        fail "expected exit $code and /$pattern/ from: $*  (got exit $rc)"
    fi
}

# --------------------------------------------------------------- shellcheck
step "shellcheck"
shellcheck scripts/*.sh
ok "shellcheck $(echo scripts/*.sh)"

# ------------------------------------------------------------- systemd unit
step "systemd unit"
unit="$repo/systemd/callbridge.service"
# verify checks that the Exec*= binaries exist: point them at the binary
# under test.
mkdir -p "$tmp/unit"
sed "s#/usr/local/bin/callbridge#$bin#g" "$unit" >"$tmp/unit/callbridge.service"
out="$(systemd-analyze verify "$tmp/unit/callbridge.service" 2>&1)" || { echo "$out" >&2; fail "systemd-analyze verify"; }
[ -z "$out" ] || { echo "$out" >&2; fail "systemd-analyze verify is not clean"; }
ok "systemd-analyze verify callbridge.service: clean"

limit=1.4
out="$(systemd-analyze security --offline=yes "$tmp/unit/callbridge.service" 2>&1)" || true
exposure="$(sed -n 's/.*Overall exposure level for callbridge.service: \([0-9.]*\).*/\1/p' <<<"$out")"
[ -n "$exposure" ] || { echo "$out" >&2; fail "no exposure level in systemd-analyze security output"; }
awk -v e="$exposure" -v l="$limit" 'BEGIN { exit !(e <= l) }' \
    || { echo "$out" >&2; fail "exposure $exposure is above $limit"; }
ok "systemd-analyze security --offline=yes: exposure $exposure (limit $limit; $(systemd-analyze --version | head -n1))"
grep -qx 'ProcSubset=pid' "$unit" || fail "unit lacks ProcSubset=pid"
grep -qx 'AmbientCapabilities=CAP_NET_BIND_SERVICE' "$unit" || fail "unit lacks AmbientCapabilities=CAP_NET_BIND_SERVICE"
grep -qx 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE' "$unit" || fail "unit's bounding set is not CAP_NET_BIND_SERVICE alone"
for line in Type=notify 'ExecReload=/usr/local/bin/callbridge reload' Restart=on-failure \
    EnvironmentFile=/etc/callbridge/callbridge.env User=callbridge; do
    grep -qxF "$line" "$unit" || fail "unit lacks $line"
done
[ "$(grep -c '^ExecReload=' "$unit")" = 1 ] || fail "unit has more than one ExecReload="
# Type=notify-reload: systemd would send SIGHUP itself and take READY=1 as
# success, refused certificate or not.
if grep -q '^Type=notify-reload' "$unit" || [ -e "$repo/systemd/callbridge.service.d" ]; then
    fail "Type=notify-reload (in the unit or a drop-in in systemd/callbridge.service.d) would make a refused reload look successful"
fi
ok "unit: Type=notify, ExecReload=callbridge reload (no notify-reload drop-in), Restart=on-failure, EnvironmentFile, user callbridge"

# Every variable of the README's configuration table is in the env template.
vars="$(sed -n '/^## Configuration/,/^## /p' README.md | grep '^|' | grep -oE '\bCALLBRIDGE_[A-Z_]*[A-Z]\b|\bRUST_LOG\b' | sort -u)"
[ -n "$vars" ] || fail "no variables found in README's Configuration section"
for v in $vars; do
    grep -qE "^#?$v=" systemd/callbridge.env.example || fail "systemd/callbridge.env.example lacks $v"
done
ok "callbridge.env.example has all $(wc -w <<<"$vars") variables of the README"

# ------------------------------------------------------------ deploy.sh CLI
step "deploy.sh: usage and failures"
scripts/deploy.sh --help | grep -q -- '--cert-only' || fail "deploy.sh --help"
scripts/certbot-deploy-hook.sh --help | grep -q -- '--tls-dir' || fail "certbot-deploy-hook.sh --help"
expect_fail 2 'domain is required' scripts/deploy.sh --email ops@example.com
expect_fail 2 'email is required' scripts/deploy.sh --domain calls.example.com
expect_fail 2 'not a DNS name' scripts/deploy.sh --domain 'bad domain' --email ops@example.com
expect_fail 2 'unknown option' scripts/deploy.sh --frobnicate
# Not root: as nobody, from a copy nobody can read ($tmp is 0700).
public="$tmp/public"
install -d -m 0755 "$public/scripts"
chmod 0711 "$tmp"
install -m 0755 scripts/deploy.sh "$public/scripts/deploy.sh"
expect_fail 2 'must be run as root' setpriv --reuid=65534 --regid=65534 --clear-groups \
    "$public/scripts/deploy.sh" --domain calls.example.com --email ops@example.com
chmod 0700 "$tmp"
ok "clear errors: missing domain/email, bad domain, unknown option, not root"

# --dry-run: everything printed, nothing changed.
snapshot() {
    { getent passwd callbridge || echo "no user"
      ls -la /etc/callbridge /usr/local/bin/callbridge /usr/local/bin/callbridge.new /usr/local/lib/callbridge 2>&1 || true
      ls "$tmp/dry" 2>&1 || true; } | sort
}
before="$(snapshot)"
out="$(scripts/deploy.sh --dry-run --domain calls.example.com --email ops@example.com \
    --binary "$bin" --no-systemd --certbot-dir "$tmp/dry/certbot" --tls-dir "$tmp/dry/tls" \
    --lib-dir "$tmp/dry/lib" --http-port "$(free_port)" 2>&1)" || { echo "$out" >&2; fail "deploy.sh --dry-run"; }
for pattern in 'useradd' 'certbot certonly' 'callbridge.env' 'check-config' "install .*$bin"; do
    grep -q -- "$pattern" <<<"$out" || { echo "$out" >&2; fail "--dry-run output lacks $pattern"; }
done
[ "$(snapshot)" = "$before" ] || fail "--dry-run changed something"
ok "--dry-run prints the plan and changes nothing"

# ------------------------------------------------------------------ pebble
step "pebble"
mkdir -p "$tmp/pebble"
# pebble's own HTTPS certificate (the Debian package ships none): a
# throwaway CA and a localhost certificate from it.
(
    cd "$tmp/pebble"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=callbridge-test-pebble-ca -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout key.pem -out csr.pem 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext.cnf
    openssl x509 -req -in csr.pem -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile ext.cnf -out cert.pem 2>/dev/null
)
acme_port="$(free_port)" mgmt_port="$(free_port)"
cat >"$tmp/pebble/config.json" <<EOF
{"pebble": {"listenAddress": "127.0.0.1:$acme_port", "managementListenAddress": "127.0.0.1:$mgmt_port",
  "certificate": "$tmp/pebble/cert.pem", "privateKey": "$tmp/pebble/key.pem",
  "httpPort": $(free_port), "tlsPort": $(free_port), "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF
PEBBLE_VA_ALWAYS_VALID=1 PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
    pebble -config "$tmp/pebble/config.json" >"$tmp/pebble/log" 2>&1 &
pids+=($!)
acme="https://127.0.0.1:$acme_port/dir"
pebble_ca="$tmp/pebble/ca.pem"
until_ok 20 curl -fsS --cacert "$pebble_ca" "$acme" || { cat "$tmp/pebble/log" >&2; fail "pebble did not start"; }
# The root of the certificates pebble issues (regenerated on every start).
curl -fsS --cacert "$pebble_ca" "https://127.0.0.1:$mgmt_port/roots/0" >"$tmp/pebble/issuer-root.pem"
issuer_root="$tmp/pebble/issuer-root.pem"
ok "pebble at $acme"

# ---------------------------------------------------- certificate failures
step "deploy.sh --cert-only: failures leave nothing installed"
domain=localhost
cert_args() { # DIR: the certificate-part options, everything under DIR
    echo --cert-only --domain "$domain" --email ops@example.com --acme-ca-bundle "$pebble_ca" \
        --certbot-dir "$1/certbot" --tls-dir "$1/tls" --tls-group root --lib-dir "$1/lib"
}
# Port busy.
busy_port="$(free_port)"
python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(600)' "$busy_port" &
busy_pid=$!
pids+=("$busy_pid")
until_ok 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$busy_port"
# shellcheck disable=SC2046 # word splitting of cert_args is intended (no spaces in tmp)
expect_fail 3 "port $busy_port is busy" scripts/deploy.sh $(cert_args "$tmp/busy") --acme-server "$acme" --http-port "$busy_port"
kill "$busy_pid"
if [ -e "$tmp/busy/tls" ] || [ -e "$tmp/busy/certbot/config/renewal-hooks/deploy/callbridge" ]; then fail "port-busy failure left files"; fi
# certbot failure: nothing answers at this ACME URL.
dead_port="$(free_port)"
# shellcheck disable=SC2046
expect_fail 4 'certbot could not obtain a certificate' scripts/deploy.sh $(cert_args "$tmp/dead") \
    --acme-server "https://127.0.0.1:$dead_port/dir" --http-port "$(free_port)"
if [ -e "$tmp/dead/tls" ] || [ -e "$tmp/dead/certbot/config/renewal-hooks/deploy/callbridge" ]; then fail "certbot failure left files"; fi
ok "port $busy_port busy: exit 3; certbot failure: exit 4; neither installed anything"

# ------------------------------------------------------------ certificate
step "deploy.sh --cert-only against pebble"
d="$tmp/deploy"
# shellcheck disable=SC2046
out="$(scripts/deploy.sh $(cert_args "$d") --acme-server "$acme" --http-port "$(free_port)" 2>&1)" \
    || { echo "$out" >&2; fail "deploy.sh --cert-only"; }
tls="$d/tls"
[ "$(stat -c '%a %U:%G' "$tls/privkey.pem")" = "640 root:root" ] || fail "privkey.pem: $(stat -c '%a %U:%G' "$tls/privkey.pem")"
[ "$(stat -c '%a' "$tls/fullchain.pem")" = 644 ] || fail "fullchain.pem mode"
[ "$(stat -c '%a' "$tls")" = 750 ] || fail "tls dir mode $(stat -c '%a' "$tls")"
cmp -s "$tls/fullchain.pem" "$d/certbot/config/live/$domain/fullchain.pem" || fail "fullchain.pem not copied"
[ -x "$d/certbot/config/renewal-hooks/deploy/callbridge" ] || fail "deploy hook not installed"
[ -x "$d/lib/certbot-deploy-hook.sh" ] || fail "hook script not installed"
grep -q "^server = $acme" "$d/certbot/config/renewal/$domain.conf" || fail "renewal conf lacks the ACME server"
serial_of() { openssl x509 -noout -serial -in "$1" | cut -d= -f2; }
serial1="$(serial_of "$tls/fullchain.pem")"
openssl verify -CAfile "$issuer_root" -untrusted "$tls/fullchain.pem" "$tls/fullchain.pem" >/dev/null \
    || fail "issued chain does not verify against pebble's root"
ok "certificate $serial1 for $domain in $tls (key 0640, chain 0644), hook installed"

# Idempotent: a second run keeps the certificate.
# shellcheck disable=SC2046
out="$(scripts/deploy.sh $(cert_args "$d") --acme-server "$acme" --http-port "$(free_port)" 2>&1)" \
    || { echo "$out" >&2; fail "second deploy.sh --cert-only"; }
grep -q 'not requesting a new one' <<<"$out" || { echo "$out" >&2; fail "second run requested a new certificate"; }
[ "$(serial_of "$tls/fullchain.pem")" = "$serial1" ] || fail "second run changed the certificate"
ok "second run: nothing requested, same certificate"

# Another CA (as from --staging to production): the certificate is replaced.
acme2="https://localhost:$acme_port/dir"
# shellcheck disable=SC2046
out="$(scripts/deploy.sh $(cert_args "$d") --acme-server "$acme2" --http-port "$(free_port)" 2>&1)" \
    || { echo "$out" >&2; fail "deploy.sh --cert-only with another ACME server"; }
grep -q "replacing it with one from $acme2" <<<"$out" || { echo "$out" >&2; fail "a certificate from another CA was kept"; }
grep -q "^server = $acme2" "$d/certbot/config/renewal/$domain.conf" || fail "renewal conf still names the old CA"
[ "$(serial_of "$tls/fullchain.pem")" != "$serial1" ] || fail "certificate not replaced"
serial1="$(serial_of "$tls/fullchain.pem")"
acme="$acme2"
ok "another ACME server: certificate replaced ($serial1), renewals go to $acme2"

# The hook ignores other certificates on the host.
out="$(RENEWED_LINEAGE="$d/certbot/config/live/other.example" "$d/certbot/config/renewal-hooks/deploy/callbridge")" \
    || fail "hook failed on a foreign lineage"
grep -q ignoring <<<"$out" || fail "hook did not ignore another lineage: $out"
ok "hook ignores other lineages"

# ------------------------------------------------------------------ daemon
step "callbridge serve on the issued certificate"
port="$(free_port)"
admin_token="$(openssl rand -hex 24)"
export CALLBRIDGE_LISTEN="127.0.0.1:$port"
export CALLBRIDGE_TLS_CERT="$tls/fullchain.pem" CALLBRIDGE_TLS_KEY="$tls/privkey.pem"
CALLBRIDGE_TELNYX_PUBLIC_KEY="$("$bin" keygen | sed -n 's/^public_key=//p')"
CALLBRIDGE_JWT_SECRET="$(openssl rand -hex 32)"
export CALLBRIDGE_TELNYX_PUBLIC_KEY CALLBRIDGE_JWT_SECRET
export CALLBRIDGE_ADMIN_TOKEN="$admin_token"
# Only SIGHUP reloads (no polling of the files): the hook must do it.
export CALLBRIDGE_TLS_RELOAD_POLL_SECS=0
export NO_COLOR=1 RUST_LOG=info
unset CALLBRIDGE_MONGODB_URI CALLBRIDGE_CONFIG 2>/dev/null || true
"$bin" check-config >"$tmp/check-config.log" 2>&1 || { cat "$tmp/check-config.log" >&2; fail "check-config on the issued certificate"; }
"$bin" serve >"$tmp/serve.log" 2>&1 &
serve_pid=$!
pids+=("$serve_pid")
base="https://$domain:$port"
curl_cb() { curl -fsS --max-time 5 --cacert "$issuer_root" --resolve "$domain:$port:127.0.0.1" "$@"; }
until_ok 30 curl_cb "$base/health" || { cat "$tmp/serve.log" >&2; fail "callbridge did not answer /health"; }
served_serial() {
    openssl s_client -connect "127.0.0.1:$port" -servername "$domain" </dev/null 2>/dev/null \
        | openssl x509 -noout -serial | cut -d= -f2
}
[ "$(served_serial)" = "$serial1" ] || fail "daemon serves $(served_serial), not $serial1"
ok "callbridge (pid $serve_pid) on $base serves $serial1"

# A dialer connected over wss.
curl_cb -X PUT "$base/api/users/demo" -H "authorization: Bearer $admin_token" \
    -H 'content-type: application/json' -d '{}' >/dev/null || fail "could not create user demo"
token="$("$bin" token --user demo --ttl 10m)"
"$bin" listen --url "wss://$domain:$port/ws" --ca "$issuer_root" --token "$token" >"$tmp/listen.out" 2>"$tmp/listen.err" &
listen_pid=$!
pids+=("$listen_pid")
until_ok 20 grep -q '"event":"connected"' "$tmp/listen.out" \
    || { cat "$tmp/listen.out" "$tmp/listen.err" >&2; fail "dialer did not connect"; }
ok "dialer connected (pid $listen_pid)"

# ----------------------------------------------------------------- renewal
step "certbot renew --force-renewal with the installed deploy hook"
renew() { # certbot renew --force-renewal of the test lineage, ENV... before it
    env "$@" REQUESTS_CA_BUNDLE="$pebble_ca" certbot renew --force-renewal --http-01-port "$(free_port)" \
        --no-random-sleep-on-renew --non-interactive --config-dir "$d/certbot/config" \
        --work-dir "$d/certbot/work" --logs-dir "$d/certbot/logs" 2>&1
}
# --pid without the admin token: SIGHUP, which reports nothing.
out="$(renew -u CALLBRIDGE_ADMIN_TOKEN CALLBRIDGE_RELOAD_PID="$serve_pid")" || { echo "$out" >&2; fail "certbot renew"; }
grep -q "sent SIGHUP to PID $serve_pid; outcome not checked" <<<"$out" || { echo "$out" >&2; fail "the deploy hook did not signal the daemon (or did not say the outcome is unchecked)"; }
serial2="$(serial_of "$tls/fullchain.pem")"
[ "$serial2" != "$serial1" ] || fail "renewal did not change the certificate in $tls"
[ "$(stat -c '%a %U:%G' "$tls/privkey.pem")" = "640 root:root" ] || fail "renewed privkey.pem owner/mode"
ok "renewed: $serial1 -> $serial2 copied to $tls, SIGHUP sent"

if until_ok 10 test "$(served_serial)" = "$serial2"; then
    ok "the running daemon serves the new certificate $serial2"
else
    cat "$tmp/serve.log" >&2
    fail "the daemon still serves $(served_serial) after SIGHUP (expected $serial2)"
fi
kill -0 "$serve_pid" 2>/dev/null || fail "the daemon exited"
kill -0 "$listen_pid" 2>/dev/null || { cat "$tmp/listen.err" >&2; fail "the dialer's connection ended during the renewal"; }
# The same WebSocket still delivers: a broadcast reaches it, and it never
# had to reconnect.
out="$(curl_cb -X POST "$base/api/broadcast" -H "authorization: Bearer $admin_token" \
    -H 'content-type: application/json' -d '{"userIds":["demo"],"event":"after-renewal","data":{}}')"
grep -q '"delivered":1' <<<"$out" || fail "broadcast after renewal: $out"
until_ok 10 grep -q '"event":"after-renewal"' "$tmp/listen.out" \
    || { cat "$tmp/listen.out" "$tmp/listen.err" >&2; fail "the dialer did not receive a message after the renewal"; }
[ "$(grep -c '"event":"connected"' "$tmp/listen.out")" = 1 ] || fail "the dialer reconnected"
curl_cb "$base/health" >/dev/null || fail "/health over the new certificate"
ok "the dialer's WebSocket stayed open and still receives; new connections get $serial2"

# With the admin token (here in the environment, as the daemon's): the
# hook asks the daemon with `callbridge reload` and reports its answer.
out="$(renew CALLBRIDGE_RELOAD_PID="$serve_pid" CALLBRIDGE_RELOAD_BIN="$bin")" || { echo "$out" >&2; fail "certbot renew (callbridge reload)"; }
grep -q 'callbridge reload: certificate valid until ' <<<"$out" || { echo "$out" >&2; fail "the deploy hook did not run callbridge reload"; }
if grep -q 'sent SIGHUP' <<<"$out"; then echo "$out" >&2; fail "the hook sent SIGHUP although it had the admin token"; fi
serial3="$(serial_of "$tls/fullchain.pem")"
[ "$serial3" != "$serial2" ] || fail "second renewal did not change the certificate"
# No waiting: the reload was done when the hook returned.
[ "$(served_serial)" = "$serial3" ] || fail "the daemon serves $(served_serial) right after callbridge reload, not $serial3"
kill -0 "$listen_pid" 2>/dev/null || fail "the dialer's connection ended during the second renewal"
ok "renewal with the admin token: the hook ran callbridge reload (checked), $serial3 served at once"

# A broken renewal the hook's own check lets through: an Ed448 key and
# certificate (openssl: the key matches; callbridge: unsupported). The
# hook must fail with the daemon's reason; the old certificate stays.
failures_metric() { curl_cb "$base/metrics" | sed -n 's/^callbridge_tls_reload_failures_total \([0-9.]*\)$/\1/p'; }
failures_before="$(failures_metric)"
bad="$tmp/ed448/live/$domain"
mkdir -p "$bad"
openssl genpkey -algorithm ed448 -out "$bad/privkey.pem" 2>/dev/null
openssl req -x509 -key "$bad/privkey.pem" -subj "/CN=$domain" -addext "subjectAltName=DNS:$domain" \
    -days 2 -out "$bad/leaf.pem" 2>/dev/null
# Leaf, then pebble's intermediate as in a real chain.
{ cat "$bad/leaf.pem"; awk '/BEGIN CERTIFICATE/ { n++ } n > 1' "$tls/fullchain.pem"; } >"$bad/fullchain.pem"
rc=0
out="$(RENEWED_LINEAGE="$bad" CALLBRIDGE_RELOAD_PID="$serve_pid" CALLBRIDGE_RELOAD_BIN="$bin" \
    "$d/certbot/config/renewal-hooks/deploy/callbridge" 2>&1)" || rc=$?
if [ "$rc" != 1 ] || ! grep -q 'reload refused: CALLBRIDGE_TLS_KEY' <<<"$out" || ! grep -q 'callbridge reload failed' <<<"$out"; then
    echo "$out" >&2; fail "broken renewal through the hook: expected exit 1 with the daemon's reason (got $rc)"
fi
[ "$(served_serial)" = "$serial3" ] || fail "after a refused reload the daemon serves $(served_serial), not the previous $serial3"
awk -v a="$(failures_metric)" -v b="${failures_before:-0}" 'BEGIN { exit !(a > b) }' \
    || fail "callbridge_tls_reload_failures_total did not go up ($failures_before -> $(failures_metric))"
grep -q 'new TLS certificate refused' "$tmp/serve.log" || fail "the daemon did not log the refused certificate"
kill -0 "$serve_pid" 2>/dev/null || fail "the daemon exited on a broken renewal"
# Put the good files back for what follows.
cp "$d/certbot/config/live/$domain/fullchain.pem" "$tls/fullchain.pem"
cp "$d/certbot/config/live/$domain/privkey.pem" "$tls/privkey.pem"
ok "broken renewal through the hook: exit 1 with the daemon's reason, $serial3 still served, failure counted"

# ----------------------------------------------------------------- testssl
# The TLS configuration as a scanner sees it, on loopback only (an IP, no
# DNS lookups). No -S (server defaults): those rate pebble's certificate,
# not the daemon.
step "testssl.sh against the daemon"
scan_started=$SECONDS
"$testssl" --fast --quiet --color 0 --warnings batch --nodns none --connect-timeout 10 --openssl-timeout 10 \
    -p -s -P -f -U --jsonfile "$tmp/testssl.json" "127.0.0.1:$port" >"$tmp/testssl.log" 2>&1 \
    || { cat "$tmp/testssl.log" >&2; fail "testssl.sh did not complete"; }
findings="$(python3 - "$tmp/testssl.json" <<'PY'
import json, sys
found = json.load(open(sys.argv[1]))
if isinstance(found, dict):  # --jsonfile-pretty layout
    found = [f for scan in found.get("scanResult", []) for part in scan.values() if isinstance(part, list) for f in part]
ids = {f.get("id") for f in found}
if "cipher_order" not in ids:
    print("no cipher_order finding: the scan did not check the server's cipher order")
for f in found:
    if f.get("severity") in ("HIGH", "CRITICAL"):
        print(f'{f["severity"]} {f["id"]}: {f["finding"]}')
PY
)" || fail "could not read $tmp/testssl.json"
[ -z "$findings" ] || { cat "$tmp/testssl.log" >&2; echo "$findings" >&2; fail "testssl.sh: HIGH or CRITICAL findings (above)"; }
kill -0 "$serve_pid" 2>/dev/null || fail "the daemon exited during the scan"
ok "testssl.sh --fast -p -s -P -f -U: no HIGH or CRITICAL finding, server cipher order ($((SECONDS - scan_started)) s)"

# --------------------------------------------- full install, private mounts
# deploy.sh without --cert-only creates a user and writes /etc, /usr/local,
# /var/log and talks to systemd. It runs here in a private mount namespace
# over copies of those directories, so the host is untouched, with a stand-in
# for systemctl (systemd is not PID 1 here) that starts the unit's command
# as its user with its EnvironmentFile and, like Type=notify, returns from
# start/restart only once the daemon is up (or failed); `reload` runs the
# unit's ExecReload= command line the same way and, like systemd, fails
# when that command fails (its output goes to the journal, not to
# systemctl's caller). A stand-in journalctl shows that journal.
write_fake_systemctl() {
    cat >"$1" <<'EOF'
#!/bin/bash
# Stand-in for systemctl, for scripts/test-deploy.sh only: one unit, callbridge.
set -euo pipefail
state=/run/systemd/fake
unit=/etc/systemd/system/callbridge.service
mkdir -p "$state"
args=() now=0
for a in "$@"; do
    case "$a" in --quiet|--no-pager) ;; --now) now=1 ;; *) args+=("$a") ;; esac
done
set -- "${args[@]}"
pid() { [ -s "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null && cat "$state/pid"; }
stop() {
    local p
    if p="$(pid)"; then
        kill "$p"
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$state/pid"
}
setting() { sed -n "s/^$1=//p" "$unit" | tail -n1; }
# exec_as_service CMDLINE: becomes CMDLINE run as the unit's user with its
# EnvironmentFile (only that: nothing inherited from the caller). Called
# in a subshell, whose output goes to the journal.
exec_as_service() {
    local user env_file v
    user="$(setting User)" env_file="$(setting EnvironmentFile)"
    for v in $(compgen -e); do
        case "$v" in CALLBRIDGE_*|RUST_LOG) unset "$v" ;; esac
    done
    set -a; . "$env_file"; set +a; export NO_COLOR=1
    # shellcheck disable=SC2086 # the command line is split into words, as systemd does
    exec setpriv --reuid="$user" --regid="$user" --init-groups -- $1
}
start() {
    local port p
    [ -r "$unit" ] || { echo "Unit callbridge.service not found." >&2; return 5; }
    (exec_as_service "$(setting ExecStart)") </dev/null >>"$state/log" 2>&1 &
    p=$!
    echo "$p" >"$state/pid"
    port="$(sed -n 's/^CALLBRIDGE_LISTEN=.*:\([0-9]*\)$/\1/p' /etc/callbridge/callbridge.env)"
    for _ in $(seq 1 150); do
        kill -0 "$p" 2>/dev/null || { rm -f "$state/pid"; echo "callbridge.service: main process exited" >&2; return 1; }
        if curl -fsk --max-time 2 "https://127.0.0.1:$port/health" >/dev/null 2>&1; then
            date '+%a %Y-%m-%d %H:%M:%S %Z' >"$state/since"
            return 0
        fi
        sleep 0.2
    done
    stop
    return 1
}
# Type=notify with ExecReload=: the reload job fails when the command does.
reload() {
    local p cmd
    p="$(pid)" || { echo "callbridge.service is not active, cannot reload." >&2; return 1; }
    cmd="$(setting ExecReload)"
    [ -n "$cmd" ] || { echo "Failed to reload callbridge.service: Job type reload is not applicable for unit callbridge.service." >&2; return 1; }
    if ! (exec_as_service "${cmd//\$MAINPID/$p}") </dev/null >>"$state/log" 2>&1; then
        echo "Job for callbridge.service failed because the control process exited with error code." >&2
        echo "See \"systemctl status callbridge.service\" and \"journalctl -xeu callbridge.service\" for details." >&2
        return 1
    fi
}
echo "$*" >>"$state/calls"
case "${1:-}" in
    daemon-reload) ;;
    is-enabled) [ -e "$state/enabled" ] ;;
    is-active) pid >/dev/null ;;
    enable) touch "$state/enabled" ;;
    disable) rm -f "$state/enabled"; [ "$now" = 0 ] || stop ;;
    start) pid >/dev/null || start ;;
    restart) stop; start ;;
    stop) stop ;;
    reload) reload ;;
    show) cat "$state/since" 2>/dev/null || echo n/a ;;
    --version) echo "systemd 257 (stand-in)" ;;
    *) echo "fake systemctl: unsupported: $*" >&2; exit 1 ;;
esac
EOF
    chmod 0755 "$1"
    # journalctl -u callbridge [-n N] [...]: the tail of the stand-in's log.
    cat >"${1%/*}/journalctl" <<'EOF'
#!/bin/bash
n=10
while [ $# -gt 0 ]; do
    case "$1" in -n) n="$2"; shift 2 ;; *) shift ;; esac
done
tail -n "$n" /run/systemd/fake/log 2>/dev/null
EOF
    chmod 0755 "${1%/*}/journalctl"
}

full_install() {
    set -euo pipefail
    local ns="$tmp/ns" dir
    for dir in etc var-log usr-local-bin usr-local-lib; do mkdir -p "$ns/$dir"; done
    cp -a /etc/. "$ns/etc/"
    cp -a /var/log/. "$ns/var-log/"
    mount --bind "$ns/etc" /etc
    mount --bind "$ns/var-log" /var/log
    mount --bind "$ns/usr-local-bin" /usr/local/bin
    mount --bind "$ns/usr-local-lib" /usr/local/lib
    mkdir -p /run/systemd
    mount -t tmpfs tmpfs /run/systemd
    mkdir /run/systemd/system
    write_fake_systemctl /usr/local/bin/systemctl
    export PATH="/usr/local/bin:$PATH"
    trap 'systemctl stop >/dev/null 2>&1 || true' EXIT
    for v in $(compgen -e); do
        case "$v" in CALLBRIDGE_*|RUST_LOG|REQUESTS_CA_BUNDLE|NO_COLOR) unset "$v" ;; esac
    done
    local state=/run/systemd/fake telnyx_key port out rc pid1 pid2
    telnyx_key="$("$bin" keygen | sed -n 's/^public_key=//p')"
    port="$(free_port)"
    deploy_full() { # BINARY [more options]
        local b="$1"; shift
        scripts/deploy.sh --domain "$domain" --email ops@example.com \
            --binary "$b" --telnyx-public-key "$telnyx_key" --listen "127.0.0.1:$port" \
            --acme-server "$acme" --acme-ca-bundle "$pebble_ca" --certbot-dir "$tmp/full/certbot" \
            --http-port "$(free_port)" "$@" 2>&1
    }
    # Stand-ins for other versions: the real binary, except that `serve`
    # fails in the bad one.
    mkdir -p /usr/local/lib/callbridge-test
    cp "$bin" /usr/local/lib/callbridge-test/callbridge
    cat >"$tmp/callbridge-v2" <<'EOF'
#!/bin/sh
# v2
exec /usr/local/lib/callbridge-test/callbridge "$@"
EOF
    cat >"$tmp/callbridge-bad" <<'EOF'
#!/bin/sh
[ "$1" != serve ] || { echo "v3 cannot start" >&2; exit 1; }
exec /usr/local/lib/callbridge-test/callbridge "$@"
EOF
    chmod 0755 "$tmp/callbridge-v2" "$tmp/callbridge-bad"
    mkdir -p "$state"
    # What earlier versions installed on systemd >= 253 (Type=notify-reload,
    # under which a refused reload still reported success).
    local dropin=/etc/systemd/system/callbridge.service.d/notify-reload.conf

    # --dry-run with systemd: the plan names the unit and no drop-in, and
    # nothing is written.
    out="$(deploy_full "$bin" --dry-run)" || { echo "$out" >&2; fail "deploy.sh --dry-run (fake systemd)"; }
    grep -q 'install .*systemd/callbridge.service /etc/systemd/system/callbridge.service' <<<"$out" || { echo "$out" >&2; fail "--dry-run does not plan the unit"; }
    if grep -q 'notify-reload' <<<"$out"; then echo "$out" >&2; fail "--dry-run plans a notify-reload drop-in"; fi
    if [ -e /etc/systemd/system/callbridge.service ] || [ -e "${dropin%/*}" ] || [ -e /usr/local/bin/callbridge ]; then
        fail "--dry-run (fake systemd) installed something"
    fi
    if grep -qvxE -- '--version|is-(enabled|active) callbridge' "$state/calls"; then
        fail "--dry-run (fake systemd) ran: $(grep -vxE -- '--version|is-(enabled|active) callbridge' "$state/calls")"
    fi
    ok "--dry-run with systemd plans the unit (no drop-in), changes nothing"

    # A fresh install whose daemon does not start is left disabled and stopped.
    rc=0; out="$(deploy_full "$tmp/callbridge-bad")" || rc=$?
    if [ "$rc" != 5 ] || ! grep -q 'failed to start' <<<"$out"; then
        echo "$out" >&2; fail "fresh install with a failing daemon: expected exit 5 (got $rc)"
    fi
    if [ -e "$state/enabled" ] || systemctl is-active; then fail "a failed fresh install left the service enabled or running"; fi
    ok "fresh install, daemon fails to start: exit 5, service disabled and stopped"

    # The real install.
    out="$(deploy_full "$bin")" || { echo "$out" >&2; fail "deploy.sh (fake systemd)"; }
    grep -q "Telnyx webhook URL:  https://$domain:$port/webhooks/telnyx" <<<"$out" || { echo "$out" >&2; fail "no webhook URL printed"; }
    grep -q "healthy" <<<"$out" || { echo "$out" >&2; fail "no health check"; }
    grep -q "certificate reload:  systemctl reload callbridge" <<<"$out" || { echo "$out" >&2; fail "no word on systemctl reload"; }
    if grep -q 'CALLBRIDGE_ADMIN_TOKEN' <<<"$out"; then echo "$out" >&2; fail "a fresh install warned about the admin token"; fi
    [ -e "$state/enabled" ] || fail "service not enabled"
    pid1="$(cat "$state/pid")"
    getent passwd callbridge | grep -q ':/nonexistent:/usr/sbin/nologin$' || fail "no system user callbridge"
    [ "$(stat -c %U "/proc/$pid1")" = callbridge ] || fail "daemon does not run as callbridge"
    [ "$(stat -c '%a %U:%G' /etc/callbridge)" = "750 root:callbridge" ] || fail "/etc/callbridge: $(stat -c '%a %U:%G' /etc/callbridge)"
    [ "$(stat -c '%a %U:%G' /etc/callbridge/callbridge.env)" = "600 root:root" ] || fail "env file owner/mode"
    [ "$(stat -c '%a %U:%G' /etc/callbridge/tls/privkey.pem)" = "640 root:callbridge" ] || fail "key owner/mode"
    [ "$(stat -c '%a' /usr/local/bin/callbridge)" = 755 ] || fail "binary mode"
    cmp -s /usr/local/bin/callbridge "$bin" || fail "binary not installed"
    cmp -s /etc/systemd/system/callbridge.service "$repo/systemd/callbridge.service" || fail "unit not installed"
    [ ! -e "${dropin%/*}" ] || fail "a drop-in directory ${dropin%/*} was installed"
    grep -qx "CALLBRIDGE_TELNYX_PUBLIC_KEY=$telnyx_key" /etc/callbridge/callbridge.env || fail "Telnyx key not in the env file"
    grep -qE '^CALLBRIDGE_JWT_SECRET=[0-9a-f]{64}$' /etc/callbridge/callbridge.env || fail "no generated JWT secret"
    grep -qE '^CALLBRIDGE_ADMIN_TOKEN=[0-9a-f]{64}$' /etc/callbridge/callbridge.env || fail "no generated admin token"
    [ "$(grep -c '^CALLBRIDGE_ADMIN_TOKEN=' /etc/callbridge/callbridge.env)" = 1 ] || fail "admin token set more than once"
    grep -qx 'CALLBRIDGE_TLS_KEY=/etc/callbridge/tls/privkey.pem' /etc/callbridge/callbridge.env || fail "TLS key path"
    [ -x /usr/local/lib/callbridge/certbot-deploy-hook.sh ] || fail "hook not in /usr/local/lib/callbridge"
    ok "install: user callbridge, /etc/callbridge (env 0600 with an admin token, key 0640 root:callbridge), binary, unit (no drop-in), enabled, running as callbridge, healthy"

    # A renewal: the installed hook reloads through systemctl, which runs
    # ExecReload= (callbridge reload); same process, new certificate.
    local c="$tmp/full/certbot" serial
    renew_full() {
        REQUESTS_CA_BUNDLE="$pebble_ca" certbot renew --force-renewal --no-random-sleep-on-renew --http-01-port "$(free_port)" \
            --non-interactive --config-dir "$c/config" --work-dir "$c/work" --logs-dir "$c/logs" 2>&1
    }
    served_full() {
        openssl s_client -connect "127.0.0.1:$port" -servername "$domain" </dev/null 2>/dev/null \
            | openssl x509 -noout -serial | cut -d= -f2
    }
    failures_full() {
        curl -fsk --max-time 5 "https://127.0.0.1:$port/metrics" \
            | sed -n 's/^callbridge_tls_reload_failures_total \([0-9.]*\)$/\1/p'
    }
    out="$(renew_full)" || { echo "$out" >&2; fail "certbot renew (fake systemd)"; }
    grep -q 'reloaded callbridge' <<<"$out" || { echo "$out" >&2; fail "hook did not reload through systemctl"; }
    grep -qx 'reload callbridge' "$state/calls" || fail "systemctl reload callbridge was not called"
    grep -q '^reloaded: certificate valid until ' "$state/log" || { tail -n 20 "$state/log" >&2; fail "ExecReload= (callbridge reload) did not report the reload"; }
    serial="$(openssl x509 -noout -serial -in /etc/callbridge/tls/fullchain.pem | cut -d= -f2)"
    [ "$(served_full)" = "$serial" ] || fail "right after systemctl reload, the installed daemon serves $(served_full), not the renewed $serial"
    if [ "$(cat "$state/pid")" != "$pid1" ] || ! kill -0 "$pid1"; then fail "the daemon did not survive systemctl reload"; fi
    ok "renewal: hook ran systemctl reload callbridge (ExecReload=callbridge reload); same process serves $serial"

    # A broken renewal: a key that does not match the certificate.
    # `systemctl reload` fails, the journal has the daemon's reason, the
    # previous certificate is still served, the failure is counted.
    local failures0 lines wrong=/etc/callbridge/tls/.privkey.wrong journal
    failures0="$(failures_full)"
    lines="$(wc -l <"$state/log")"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/full-wrong-key.pem" 2>/dev/null
    install -m 0640 -o root -g callbridge "$tmp/full-wrong-key.pem" "$wrong"
    mv -f "$wrong" /etc/callbridge/tls/privkey.pem
    rc=0; out="$(systemctl reload callbridge 2>&1)" || rc=$?
    if [ "$rc" = 0 ] || ! grep -q 'Job for callbridge.service failed' <<<"$out"; then
        echo "$out" >&2; fail "broken key: systemctl reload callbridge exited $rc"
    fi
    journal="$(tail -n "+$((lines + 1))" "$state/log")"
    grep -q 'error: reload refused: CALLBRIDGE_TLS_KEY: /etc/callbridge/tls/privkey.pem does not match' <<<"$journal" \
        || { echo "$journal" >&2; fail "broken key: the journal lacks callbridge reload's reload-refused reason"; }
    grep -q 'new TLS certificate refused' <<<"$journal" || { echo "$journal" >&2; fail "broken key: the daemon did not log the refusal"; }
    [ "$(served_full)" = "$serial" ] || fail "broken key: the daemon serves $(served_full), not the previous $serial"
    if [ "$(cat "$state/pid")" != "$pid1" ] || ! kill -0 "$pid1"; then fail "the daemon did not survive a refused reload"; fi
    awk -v a="$(failures_full)" -v b="${failures0:-0}" 'BEGIN { exit !(a > b) }' \
        || fail "callbridge_tls_reload_failures_total did not go up ($failures0 -> $(failures_full))"
    ok "broken key: systemctl reload exit $rc, the journal names the mismatch, $serial still served, failures $failures0 -> $(failures_full)"

    # The same through the certbot hook: a renewal openssl accepts (an
    # Ed448 key matching its certificate) and callbridge does not. The hook
    # must fail (certbot then reports it), pointing to the journal.
    local bad="$tmp/full-ed448/live/$domain"
    mkdir -p "$bad"
    openssl genpkey -algorithm ed448 -out "$bad/privkey.pem" 2>/dev/null
    openssl req -x509 -key "$bad/privkey.pem" -subj "/CN=$domain" -addext "subjectAltName=DNS:$domain" \
        -days 2 -out "$bad/leaf.pem" 2>/dev/null
    { cat "$bad/leaf.pem"; awk '/BEGIN CERTIFICATE/ { n++ } n > 1' /etc/callbridge/tls/fullchain.pem; } >"$bad/fullchain.pem"
    rc=0; out="$(RENEWED_LINEAGE="$bad" "$c/config/renewal-hooks/deploy/callbridge" 2>&1)" || rc=$?
    if [ "$rc" = 0 ] || ! grep -q 'systemctl reload callbridge failed' <<<"$out" \
        || ! grep -q 'journalctl -u callbridge' <<<"$out" || ! grep -q 'reload refused' <<<"$out"; then
        echo "$out" >&2; fail "broken renewal through the hook: expected a failure naming the reason and journalctl -u callbridge (got exit $rc)"
    fi
    [ "$(served_full)" = "$serial" ] || fail "broken renewal (hook): the daemon serves $(served_full), not the previous $serial"
    ok "broken renewal through the certbot hook: exit $rc, reason shown, journalctl -u callbridge named, $serial still served"

    # Renewed properly: systemctl reload succeeds, the new serial is served
    # by the same process.
    local serial_new
    out="$(renew_full)" || { echo "$out" >&2; fail "certbot renew after the broken renewals"; }
    grep -q 'reloaded callbridge' <<<"$out" || { echo "$out" >&2; fail "hook did not reload after the broken renewals"; }
    systemctl reload callbridge || fail "systemctl reload callbridge fails on good files"
    serial_new="$(openssl x509 -noout -serial -in /etc/callbridge/tls/fullchain.pem | cut -d= -f2)"
    [ "$serial_new" != "$serial" ] || fail "the renewal did not change the certificate"
    [ "$(served_full)" = "$serial_new" ] || fail "after a good renewal the daemon serves $(served_full), not $serial_new"
    if [ "$(cat "$state/pid")" != "$pid1" ] || ! kill -0 "$pid1"; then fail "the daemon did not survive the renewals"; fi
    ok "good renewal after the broken ones: systemctl reload exit 0, same process serves $serial_new"

    # Re-run, nothing changed: no restart (dialer connections kept).
    local sum; sum="$(sha256sum /etc/callbridge/callbridge.env)"
    out="$(deploy_full "$bin")" || { echo "$out" >&2; fail "second deploy"; }
    grep -q 'exists, keeping it' <<<"$out" || fail "second run did not keep the env file"
    grep -q 'already this version' <<<"$out" || fail "second run reinstalled the same binary"
    grep -q 'not restarting' <<<"$out" || { echo "$out" >&2; fail "second run restarted the service"; }
    [ "$(cat "$state/pid")" = "$pid1" ] || fail "second run restarted the daemon"
    [ "$(sha256sum /etc/callbridge/callbridge.env)" = "$sum" ] || fail "second run changed the env file"
    ok "re-run: env file, binary and running daemon untouched"

    # Upgrade: new binary, restarted, the old one kept.
    out="$(deploy_full "$tmp/callbridge-v2")" || { echo "$out" >&2; fail "upgrade"; }
    pid2="$(cat "$state/pid")"
    [ "$pid2" != "$pid1" ] || fail "upgrade did not restart"
    cmp -s /usr/local/bin/callbridge "$tmp/callbridge-v2" || fail "upgrade did not install the new binary"
    cmp -s /usr/local/bin/callbridge.prev "$bin" || fail "upgrade did not keep the previous binary"
    ok "upgrade: new binary running, previous kept as callbridge.prev"

    # A bad upgrade rolls back to the running version.
    rc=0; out="$(deploy_full "$tmp/callbridge-bad")" || rc=$?
    if [ "$rc" != 5 ]; then echo "$out" >&2; fail "bad upgrade: expected exit 5 (got $rc)"; fi
    cmp -s /usr/local/bin/callbridge "$tmp/callbridge-v2" || fail "bad upgrade: previous binary not restored"
    systemctl is-active || fail "bad upgrade: service not running again"
    [ -e "$state/enabled" ] || fail "bad upgrade: service disabled"
    [ ! -e /usr/local/bin/callbridge.new ] || fail "staged binary left behind"
    ok "bad upgrade: exit 5, previous binary restored and running"

    # An upgrade of an install by an earlier version, which added the
    # notify-reload drop-in on systemd >= 253: --dry-run says it goes, the
    # run removes it (not the operator's other drop-ins) and restarts once.
    mkdir -p "${dropin%/*}"
    printf '[Service]\nType=notify-reload\nExecReload=\n' >"$dropin"
    printf '# the operator'\''s own\n' >"${dropin%/*}/local.conf"
    out="$(deploy_full "$tmp/callbridge-v2" --dry-run)" || { echo "$out" >&2; fail "--dry-run with an old drop-in"; }
    if ! grep -q "removing $dropin" <<<"$out" || ! grep -qF "[dry-run] rm -f $dropin" <<<"$out"; then
        echo "$out" >&2; fail "--dry-run does not say that the old drop-in goes"
    fi
    [ -e "$dropin" ] || fail "--dry-run removed the old drop-in"
    pid2="$(cat "$state/pid")"
    out="$(deploy_full "$tmp/callbridge-v2")" || { echo "$out" >&2; fail "upgrade with an old drop-in"; }
    grep -q "removing $dropin" <<<"$out" || { echo "$out" >&2; fail "the old drop-in was not removed"; }
    [ ! -e "$dropin" ] || fail "$dropin left behind"
    [ -e "${dropin%/*}/local.conf" ] || fail "the operator's drop-in was removed"
    [ "$(cat "$state/pid")" != "$pid2" ] || fail "the unit changed (drop-in removed) but the service was not restarted"
    rm -r "${dropin%/*}"
    out="$(deploy_full "$tmp/callbridge-v2")" || { echo "$out" >&2; fail "re-run after the drop-in's removal"; }
    grep -q 'not restarting' <<<"$out" || { echo "$out" >&2; fail "re-run after the drop-in's removal restarted the service"; }
    systemctl reload callbridge || fail "systemctl reload after the upgrade"
    ok "old notify-reload drop-in: planned by --dry-run, removed on upgrade (other drop-ins kept), restarted once"

    # An env file kept from an earlier install without the admin token:
    # warned about (reloads would fail), never rewritten.
    cp -p /etc/callbridge/callbridge.env "$tmp/full-env.bak"
    sed -i 's/^CALLBRIDGE_ADMIN_TOKEN=.*/CALLBRIDGE_ADMIN_TOKEN=/' /etc/callbridge/callbridge.env
    sum="$(sha256sum /etc/callbridge/callbridge.env)"
    out="$(deploy_full "$tmp/callbridge-v2")" || { echo "$out" >&2; fail "deploy with an env file without admin token"; }
    if ! grep -q 'callbridge.env has no CALLBRIDGE_ADMIN_TOKEN' <<<"$out" || ! grep -q 'systemctl reload callbridge. (and so the reload after each certificate renewal) will fail' <<<"$out"; then
        echo "$out" >&2; fail "no warning about the missing admin token"
    fi
    grep -q 'still has no CALLBRIDGE_ADMIN_TOKEN' <<<"$out" || { echo "$out" >&2; fail "no reminder of the missing admin token at the end"; }
    [ "$(sha256sum /etc/callbridge/callbridge.env)" = "$sum" ] || fail "deploy.sh rewrote an env file without admin token"
    rc=0; systemctl reload callbridge 2>/dev/null || rc=$?
    [ "$rc" != 0 ] || fail "systemctl reload succeeded without an admin token"
    tail -n 3 "$state/log" | grep -q 'CALLBRIDGE_ADMIN_TOKEN is not set' || { tail -n 5 "$state/log" >&2; fail "the journal does not say the admin token is missing"; }
    cp -p "$tmp/full-env.bak" /etc/callbridge/callbridge.env
    ok "env file without admin token: warned (twice), left as it is; systemctl reload then fails, saying why"

    # An unusable configuration stops before anything is replaced.
    sed -i 's/^CALLBRIDGE_TELNYX_PUBLIC_KEY=.*/CALLBRIDGE_TELNYX_PUBLIC_KEY=/' /etc/callbridge/callbridge.env
    pid2="$(cat "$state/pid")"
    rc=0; out="$(deploy_full "$bin")" || rc=$?
    if [ "$rc" != 2 ] || ! grep -q 'CALLBRIDGE_TELNYX_PUBLIC_KEY' <<<"$out"; then
        echo "$out" >&2; fail "missing Telnyx key: expected exit 2 naming it (got $rc)"
    fi
    cmp -s /usr/local/bin/callbridge "$tmp/callbridge-v2" || fail "a failed check-config still replaced the binary"
    [ "$(cat "$state/pid")" = "$pid2" ] || fail "a failed check-config restarted the service"
    [ ! -e /usr/local/bin/callbridge.new ] || fail "staged binary left behind after a failure"
    ok "unusable configuration (no Telnyx key): exit 2, binary and running service untouched"
    systemctl stop
}
step "deploy.sh full install in a private mount namespace (stand-in systemctl)"
if unshare -m --propagation private true 2>/dev/null; then
    before="$(snapshot)"
    export -f full_install write_fake_systemctl fail ok free_port until_ok
    export tmp bin repo domain acme pebble_ca
    unshare -m --propagation private bash -c full_install
    [ "$(snapshot)" = "$before" ] || fail "the full install changed the host outside its namespace"
else
    echo "SKIP: cannot create a mount namespace here (unshare -m); full install not tested" >&2
fi

echo "PASS: scripts/test-deploy.sh ($((SECONDS - started)) s)"
