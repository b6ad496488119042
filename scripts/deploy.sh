#!/usr/bin/env bash
# Deploys callbridge on a Debian/Ubuntu host with systemd: binary, service
# user, /etc/callbridge, the systemd unit, a Let's Encrypt certificate
# (certbot, HTTP-01) with a renewal hook that reloads the daemon, then starts
# the service and checks https://DOMAIN/health. Idempotent: re-run it to
# upgrade (new binary, same configuration and certificate).
#
# Run scripts/deploy.sh --help for the options.
set -euo pipefail

prog="${0##*/}"
repo="$(cd "$(dirname "$0")/.." && pwd)"

# ------------------------------------------------------------------ options
domain=""
email=""
webroot=""
http_port=80
acme_server=""
acme_ca_bundle=""
staging=0
force_renewal=0
binary=""
telnyx_key=""
listen=""
cert_only=0
no_systemd=0
dry_run=0
certbot_dir=""
tls_dir=/etc/callbridge/tls
tls_group=""
lib_dir=/usr/local/lib/callbridge

service=callbridge
svc_user=callbridge
bin_path=/usr/local/bin/callbridge
etc_dir=/etc/callbridge
env_file=/etc/callbridge/callbridge.env
unit_path=/etc/systemd/system/callbridge.service
# Installed by earlier versions on systemd >= 253 (Type=notify-reload, under
# which a refused certificate reload still reported success); removed.
dropin_dir=/etc/systemd/system/callbridge.service.d
dropin_path=$dropin_dir/notify-reload.conf

# Exit codes (also in --help).
E_USAGE=2 E_PORT=3 E_CERTBOT=4 E_START=5 E_HEALTH=6

usage() {
    cat <<EOF
Usage: $prog --domain DOMAIN --email EMAIL [OPTIONS]

Installs callbridge as a systemd service with a Let's Encrypt certificate:
  1. builds the binary (cargo build --release) or takes --binary PATH
  2. creates the system user '$svc_user', $etc_dir and $env_file
     (from systemd/callbridge.env.example, mode 0600, never overwritten;
     a random JWT secret and admin token are generated; an existing file
     without CALLBRIDGE_ADMIN_TOKEN is kept, with a warning: reloads need it)
  3. obtains a certificate with certbot for DOMAIN (standalone HTTP-01 on
     port 80, or --webroot) and installs the renewal deploy hook, which copies
     it to $tls_dir after every renewal and runs systemctl reload (the unit's
     ExecReload=callbridge reload: fails when the daemon refuses the files)
  4. validates the configuration as the service user (callbridge check-config)
  5. installs the binary to $bin_path (the previous one is kept as
     $bin_path.prev) and the unit to $unit_path, and removes the
     drop-in $dropin_path
     that earlier versions installed (Type=notify-reload)
  6. enables and (re)starts the service, checks https://DOMAIN/health
A failed step leaves nothing newly enabled: a fresh install is disabled
again, an upgrade goes back to the previous binary.

Options:
  --domain DOMAIN         public DNS name of this host (required)
  --email EMAIL           Let's Encrypt account e-mail (required)
  --telnyx-public-key KEY Telnyx public key (base64) for a new env file; without
                          it, fill CALLBRIDGE_TELNYX_PUBLIC_KEY in and re-run
  --listen ADDR:PORT      CALLBRIDGE_LISTEN for a new env file [0.0.0.0:443]
  --binary PATH           install this binary instead of building one
  --webroot DIR           HTTP-01 through a web server already serving DIR on
                          port 80, instead of certbot's standalone server
  --http-port N           port for certbot's standalone server [80]
  --staging               use Let's Encrypt's staging CA (untrusted test certs)
  --acme-server URL       ACME directory URL (a test CA such as pebble)
  --acme-ca-bundle FILE   CA bundle certbot trusts for the ACME server's HTTPS
                          (REQUESTS_CA_BUNDLE)
  --force-renewal         request a new certificate even if one is valid
  --cert-only             only the certificate part: certbot, deploy hook,
                          copy to --tls-dir (no binary, user, unit or service)
  --certbot-dir DIR       certbot config/work/logs under DIR instead of
                          /etc/letsencrypt, /var/lib/letsencrypt, /var/log/letsencrypt
  --tls-dir DIR           where the hook puts fullchain.pem, privkey.pem [$tls_dir]
  --tls-group GROUP       group that may read the key [$svc_user]
  --lib-dir DIR           where the deploy hook is installed [$lib_dir]
  --no-systemd            do not install, enable or start the unit
  --dry-run               print what would be done, change nothing
  -h, --help              this text

Exit codes: 0 deployed; 1 failure; $E_USAGE usage or configuration error (including
not root); $E_PORT HTTP-01 port busy; $E_CERTBOT certbot failed; $E_START service failed to
start (rolled back); $E_HEALTH running, but https://DOMAIN/health unreachable from here
(DNS or firewall).

Examples:
  sudo $prog --domain calls.example.com --email ops@example.com \\
       --telnyx-public-key 'BASE64KEY='
  sudo $prog --domain calls.example.com --email ops@example.com --staging --dry-run
EOF
}

die() { # [CODE] MESSAGE
    local code=1
    if [ $# -gt 1 ]; then code="$1"; shift; fi
    echo "$prog: error: $*" >&2
    exit "$code"
}
log() { echo "==> $*"; }
warn() { echo "$prog: warning: $*" >&2; }

# Runs a command, or prints it under --dry-run.
run() {
    if [ "$dry_run" = 1 ]; then
        printf '[dry-run]'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

need_value() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then die "$E_USAGE" "$1 needs a value (see --help)"; fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --domain) need_value "$@"; domain="$2"; shift 2 ;;
        --email) need_value "$@"; email="$2"; shift 2 ;;
        --telnyx-public-key) need_value "$@"; telnyx_key="$2"; shift 2 ;;
        --listen) need_value "$@"; listen="$2"; shift 2 ;;
        --binary) need_value "$@"; binary="$2"; shift 2 ;;
        --webroot) need_value "$@"; webroot="$2"; shift 2 ;;
        --http-port) need_value "$@"; http_port="$2"; shift 2 ;;
        --staging) staging=1; shift ;;
        --acme-server) need_value "$@"; acme_server="$2"; shift 2 ;;
        --acme-ca-bundle) need_value "$@"; acme_ca_bundle="$2"; shift 2 ;;
        --force-renewal) force_renewal=1; shift ;;
        --cert-only) cert_only=1; shift ;;
        --certbot-dir) need_value "$@"; certbot_dir="$2"; shift 2 ;;
        --tls-dir) need_value "$@"; tls_dir="$2"; shift 2 ;;
        --tls-group) need_value "$@"; tls_group="$2"; shift 2 ;;
        --lib-dir) need_value "$@"; lib_dir="$2"; shift 2 ;;
        --no-systemd) no_systemd=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$prog: unknown option: $1 (see --help)" >&2; exit "$E_USAGE" ;;
    esac
done

# ------------------------------------------------------------- preflight
[ -n "$domain" ] || die "$E_USAGE" "--domain is required: the public DNS name Telnyx and the dialers will reach (e.g. --domain calls.example.com)"
[ -n "$email" ] || die "$E_USAGE" "--email is required: Let's Encrypt sends expiry notices there"
domain="${domain,,}"
[[ "$domain" =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$ ]] \
    || die "$E_USAGE" "--domain '$domain' is not a DNS name"
[[ "$email" == *@* ]] || die "$E_USAGE" "--email '$email' is not an e-mail address"
if ! [[ "$http_port" =~ ^[0-9]+$ ]] || [ "$http_port" -lt 1 ] || [ "$http_port" -gt 65535 ]; then
    die "$E_USAGE" "--http-port '$http_port' is not a port number"
fi
http_port=$((10#$http_port))
if [ "$staging" = 1 ] && [ -n "$acme_server" ]; then
    die "$E_USAGE" "--staging and --acme-server exclude each other"
fi
if [ -n "$webroot" ] && [ ! -d "$webroot" ]; then
    die "$E_USAGE" "--webroot $webroot is not a directory"
fi
if [ -n "$acme_ca_bundle" ]; then
    [ -r "$acme_ca_bundle" ] || die "$E_USAGE" "--acme-ca-bundle $acme_ca_bundle is not readable"
    export REQUESTS_CA_BUNDLE="$acme_ca_bundle"
fi
if [ -n "$telnyx_key" ]; then
    [[ "$telnyx_key" =~ ^[A-Za-z0-9+/]{43}=$ ]] \
        || die "$E_USAGE" "--telnyx-public-key is not 32 bytes of base64 (44 characters ending in '=')"
fi
if [ -n "$listen" ]; then
    [[ "$listen" =~ ^(.+):([0-9]+)$ ]] || die "$E_USAGE" "--listen '$listen' is not ADDR:PORT"
fi
[ -n "$tls_group" ] || tls_group="$svc_user"

if [ "$(id -u)" != 0 ]; then
    if [ "$dry_run" = 1 ]; then
        warn "not root: a real run must be started as root (sudo)"
    else
        die "$E_USAGE" "must be run as root (try: sudo $0 ...)"
    fi
fi

for tool in certbot openssl; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install $tool)"
done
if [ "$cert_only" = 0 ]; then
    for tool in curl getent useradd setpriv; do
        command -v "$tool" >/dev/null || die "$tool is not installed"
    done
fi
use_systemd=0
if [ "$cert_only" = 0 ] && [ "$no_systemd" = 0 ]; then
    if ! command -v systemctl >/dev/null || [ ! -d /run/systemd/system ]; then
        msg="systemd is not running on this host (no /run/systemd/system); use --no-systemd to install without the service"
        if [ "$dry_run" = 1 ]; then warn "$msg"; else die "$E_USAGE" "$msg"; fi
    fi
    use_systemd=1
fi

if [ -n "$certbot_dir" ]; then
    certbot_config="$certbot_dir/config"
    certbot_args=(--config-dir "$certbot_dir/config" --work-dir "$certbot_dir/work" --logs-dir "$certbot_dir/logs")
else
    certbot_config=/etc/letsencrypt
    certbot_args=()
fi
certbot_log="${certbot_dir:+$certbot_dir/logs}"
certbot_log="${certbot_log:-/var/log/letsencrypt}/letsencrypt.log"
lineage="$certbot_config/live/$domain"

# Something listening on TCP PORT, any address (from /proc, no tools needed)?
port_in_use() {
    local hex
    hex="$(printf '%04X' "$1")"
    awk -v p="$hex" 'FNR > 1 && $4 == "0A" { split($2, a, ":"); if (toupper(a[2]) == p) found = 1 }
        END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Reads KEY=VALUE lines of an EnvironmentFile into the array env_kv.
read_env_file() {
    env_kv=()
    local line key val
    while IFS= read -r line || [ -n "$line" ]; do
        [[ "$line" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
        key="${BASH_REMATCH[1]}" val="${BASH_REMATCH[2]}"
        if [[ "$val" =~ ^\"(.*)\"$ ]] || [[ "$val" =~ ^\'(.*)\'$ ]]; then
            val="${BASH_REMATCH[1]}"
        fi
        env_kv+=("$key=$val")
    done <"$1"
}
env_value() { # KEY -> value from env_kv
    local kv
    for kv in "${env_kv[@]}"; do
        if [ "${kv%%=*}" = "$1" ]; then printf '%s' "${kv#*=}"; return 0; fi
    done
    return 1
}

# ------------------------------------------------------------ the binary
stage=""
prepare_binary() {
    if [ -n "$binary" ]; then
        [ -x "$binary" ] || die "$E_USAGE" "--binary $binary is not an executable file"
    else
        command -v cargo >/dev/null || die "$E_USAGE" "cargo is not in root's PATH: build first (cargo build --release) and pass --binary target/release/callbridge"
        log "building callbridge (cargo build --release --locked)"
        run cargo build --release --locked --bin callbridge --manifest-path "$repo/Cargo.toml"
        binary="$repo/target/release/callbridge"
    fi
    if [ "$dry_run" = 0 ]; then
        "$binary" --version >/dev/null 2>&1 || die "$binary does not run (--version failed)"
    fi
    # Staged next to its final place, where the service user can run it.
    stage="$bin_path.new"
    run install -D -m 0755 -o root -g root "$binary" "$stage"
}

# ------------------------------------------------- user, /etc, env file
setup_user_and_config() {
    if getent passwd "$svc_user" >/dev/null; then
        log "system user $svc_user exists"
    else
        log "creating system user $svc_user"
        run useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment "callbridge daemon" "$svc_user"
    fi
    run install -d -m 0750 -o root -g "$svc_user" "$etc_dir"
    if [ -e "$env_file" ]; then
        log "$env_file exists, keeping it"
        if [ -n "$telnyx_key" ] || [ -n "$listen" ]; then
            warn "--telnyx-public-key and --listen only fill in a new env file: edit $env_file to change them"
        fi
        check_admin_token
        return
    fi
    log "creating $env_file from systemd/callbridge.env.example (mode 0600)"
    if [ "$dry_run" = 1 ]; then
        echo "[dry-run] write $env_file (root:root 0600): TLS paths in $tls_dir, new JWT secret and admin token${telnyx_key:+, the given Telnyx key}"
        return
    fi
    local template="$repo/systemd/callbridge.env.example" tmp line key
    [ -r "$template" ] || die "template $template is missing"
    local -A fill=(
        [CALLBRIDGE_TLS_CERT]="$tls_dir/fullchain.pem"
        [CALLBRIDGE_TLS_KEY]="$tls_dir/privkey.pem"
        [CALLBRIDGE_JWT_SECRET]="$(openssl rand -hex 32)"
        [CALLBRIDGE_ADMIN_TOKEN]="$(openssl rand -hex 32)"
    )
    [ -z "$telnyx_key" ] || fill[CALLBRIDGE_TELNYX_PUBLIC_KEY]="$telnyx_key"
    [ -z "$listen" ] || fill[CALLBRIDGE_LISTEN]="$listen"
    local -A written=()
    tmp="$(mktemp "$etc_dir/.callbridge.env.XXXXXX")"
    {
        while IFS= read -r line || [ -n "$line" ]; do
            key="${line%%=*}"
            if [[ "$line" == CALLBRIDGE_*=* ]] && [ -n "${fill[$key]+set}" ] && [ -z "${written[$key]+set}" ]; then
                printf '%s=%s\n' "$key" "${fill[$key]}"
                written[$key]=1
            else
                printf '%s\n' "$line"
            fi
        done <"$template"
        # Whatever the template lacks (the admin token above all: the
        # unit's ExecReload= needs it) is added at the end.
        for key in "${!fill[@]}"; do
            [ -n "${written[$key]+set}" ] || printf '%s=%s\n' "$key" "${fill[$key]}"
        done
    } >"$tmp"
    chmod 0600 "$tmp"
    chown root:root "$tmp"
    # ln (not mv): fails instead of replacing a file created meanwhile.
    if ! ln "$tmp" "$env_file"; then
        rm -f "$tmp"
        die "could not create $env_file"
    fi
    rm -f "$tmp"
}

# An env file kept from an earlier install may lack the admin token, which
# `callbridge reload` (the unit's ExecReload=, run by the renewal hook)
# needs. The file is the operator's: warn, never edit it.
admin_token_missing=0
check_admin_token() {
    [ -r "$env_file" ] || return 0
    read_env_file "$env_file"
    if [ -n "$(env_value CALLBRIDGE_ADMIN_TOKEN || true)" ]; then return 0; fi
    admin_token_missing=1
    warn "$env_file has no CALLBRIDGE_ADMIN_TOKEN: the service runs, but \`systemctl reload $service\` (and so the reload after each certificate renewal) will fail, the running daemon keeping its certificate until it notices the new files itself or restarts. Add a line CALLBRIDGE_ADMIN_TOKEN=<openssl rand -hex 32> to $env_file and run this script again (it restarts the service when the file changed). The file is left as it is."
}

# ---------------------------------------------------------- certificate
le_production=https://acme-v02.api.letsencrypt.org/directory
le_staging=https://acme-staging-v02.api.letsencrypt.org/directory
wanted_server() {
    if [ -n "$acme_server" ]; then echo "$acme_server"
    elif [ "$staging" = 1 ]; then echo "$le_staging"
    else echo "$le_production"; fi
}
current_server() { # the CA the existing certificate renews from
    local conf="$certbot_config/renewal/$domain.conf"
    [ -r "$conf" ] || return 0
    sed -n 's/^server *= *//p' "$conf" | head -n1
}

cert_is_current() { # from the wanted CA, valid for 30 more days, covers the domain
    [ -r "$lineage/fullchain.pem" ] || return 1
    [ "$(current_server)" = "$(wanted_server)" ] || return 1
    openssl x509 -in "$lineage/fullchain.pem" -noout -checkend $((30 * 86400)) >/dev/null 2>&1 || return 1
    openssl x509 -in "$lineage/fullchain.pem" -noout -checkhost "$domain" 2>/dev/null | grep -q 'does match'
}

obtain_certificate() {
    if [ "$force_renewal" = 0 ] && cert_is_current; then
        log "certificate for $domain is valid until $(openssl x509 -in "$lineage/fullchain.pem" -noout -enddate | cut -d= -f2); not requesting a new one"
        return
    fi
    local replace=0 from
    from="$(current_server)"
    if [ -r "$lineage/fullchain.pem" ] && [ -n "$from" ] && [ "$from" != "$(wanted_server)" ]; then
        log "the certificate for $domain comes from $from; replacing it with one from $(wanted_server)"
        replace=1
    fi
    local args=(certonly --non-interactive --agree-tos --email "$email"
        --cert-name "$domain" -d "$domain" --keep-until-expiring "${certbot_args[@]}")
    if [ "$force_renewal" = 1 ] || [ "$replace" = 1 ]; then args+=(--force-renewal); fi
    # certbot refuses to replace a valid certificate with a staging one unless told.
    if [ "$replace" = 1 ] && [ "$(wanted_server)" = "$le_staging" ]; then args+=(--break-my-certs); fi
    [ -z "$acme_server" ] || args+=(--server "$acme_server")
    [ "$staging" = 0 ] || args+=(--staging)
    if [ -n "$webroot" ]; then
        args+=(--webroot -w "$webroot")
    else
        if port_in_use "$http_port"; then
            local who=""
            command -v ss >/dev/null && who="$(ss -Hltnp "sport = :$http_port" 2>/dev/null | grep -o 'users:.*' | head -n1)"
            die "$E_PORT" "port $http_port is busy${who:+ ($who)}: certbot's standalone HTTP-01 server needs it. Stop that server during the deploy, or let it serve the challenge with --webroot DIR."
        fi
        args+=(--standalone --http-01-port "$http_port")
    fi
    log "requesting a certificate for $domain${acme_server:+ from $acme_server}$([ "$staging" = 0 ] || echo ' from the Let'\''s Encrypt staging CA')"
    if ! run certbot "${args[@]}"; then
        local how="TCP port 80 is open to the internet and reaches certbot on port $http_port here"
        [ -z "$webroot" ] || how="http://$domain/.well-known/acme-challenge/ is served from $webroot"
        die "$E_CERTBOT" "certbot could not obtain a certificate for $domain (details: $certbot_log). Check that $domain resolves to this host in public DNS and that $how (HTTP-01)."
    fi
    if [ "$dry_run" = 0 ] && [ ! -r "$lineage/fullchain.pem" ]; then
        die "$E_CERTBOT" "certbot succeeded but $lineage/fullchain.pem is missing"
    fi
}

install_hook() {
    local hook="$lib_dir/certbot-deploy-hook.sh"
    local hooks_dir="$certbot_config/renewal-hooks/deploy"
    local wrapper="$hooks_dir/callbridge"
    local hook_args=(--domain "$domain" --tls-dir "$tls_dir" --group "$tls_group" --service "$service")
    log "installing the renewal deploy hook ($wrapper -> $hook)"
    run install -D -m 0755 "$repo/scripts/certbot-deploy-hook.sh" "$hook"
    run install -d -m 0755 "$hooks_dir"
    if [ "$dry_run" = 1 ]; then
        printf '[dry-run] write %s: exec %q' "$wrapper" "$hook"; printf ' %q' "${hook_args[@]}"; printf '\n'
    else
        local tmp
        tmp="$(mktemp "$hooks_dir/.callbridge.XXXXXX")"
        {
            echo '#!/bin/sh'
            echo "# Installed by callbridge's deploy.sh: after each renewal of $domain, copy it"
            echo "# to $tls_dir and reload callbridge. certbot runs every file in this directory."
            printf 'exec %q' "$hook"; printf ' %q' "${hook_args[@]}"; printf '\n'
        } >"$tmp"
        chmod 0755 "$tmp"
        mv -f "$tmp" "$wrapper"
    fi
    # First copy now (certbot runs directory hooks only on renewals).
    log "copying the certificate to $tls_dir"
    if [ "$dry_run" = 1 ]; then
        echo "[dry-run] RENEWED_LINEAGE=$lineage $wrapper"
    else
        RENEWED_LINEAGE="$lineage" "$wrapper" || die "the deploy hook failed"
    fi
}

# ------------------------------------------------------------- service
check_config() {
    log "checking the configuration as user $svc_user (callbridge check-config)"
    if [ "$dry_run" = 1 ]; then
        echo "[dry-run] setpriv --reuid=$svc_user --regid=$svc_user --init-groups -- $stage check-config   (environment: $env_file)"
        return
    fi
    read_env_file "$env_file"
    local out rc=0
    # Secrets go through the environment, not argv.
    # Like systemd: only the env file, nothing inherited from this shell.
    out="$(
        for v in $(compgen -e); do
            case "$v" in CALLBRIDGE_*|RUST_LOG) unset "$v" ;; esac
        done
        for kv in "${env_kv[@]}"; do export "${kv?}"; done
        setpriv --reuid="$svc_user" --regid="$svc_user" --init-groups -- "$stage" check-config 2>&1
    )" || rc=$?
    printf '%s\n' "$out" | sed 's/^/    /'
    if [ "$rc" != 0 ]; then
        run rm -f "$stage"
        die "$E_USAGE" "the configuration is not usable (check-config exit $rc, above). Edit $env_file and run $prog again; the installed binary and the service were not touched."
    fi
}

was_enabled=0 was_active=0 had_prev=0
rollback() {
    warn "rolling back"
    journalctl -u "$service" -n 30 --no-pager >&2 2>/dev/null || true
    if [ "$had_prev" = 1 ]; then
        cp -f "$bin_path.prev" "$bin_path.rollback" && mv -f "$bin_path.rollback" "$bin_path"
        warn "restored the previous binary ($bin_path.prev)"
    fi
    if [ "$was_enabled" = 1 ] || [ "$was_active" = 1 ]; then
        if systemctl restart "$service"; then
            warn "$service runs the previous version again"
        else
            warn "$service does not start with the previous version either"
        fi
    else
        systemctl disable --now "$service" >/dev/null 2>&1 || true
        warn "$service is disabled and stopped"
    fi
}

restarted=0
install_and_start() {
    local changed=0
    if [ "$use_systemd" = 1 ]; then
        if systemctl is-enabled --quiet "$service" 2>/dev/null; then was_enabled=1; fi
        if systemctl is-active --quiet "$service" 2>/dev/null; then was_active=1; fi
    fi
    if [ "$dry_run" = 0 ] && cmp -s "$bin_path" "$stage" 2>/dev/null; then
        log "$bin_path is already this version"
        rm -f "$stage"
    else
        if [ -x "$bin_path" ]; then
            log "keeping the current binary as $bin_path.prev"
            run cp -p "$bin_path" "$bin_path.prev"
            had_prev=1
        fi
        log "installing $bin_path ($("$stage" --version 2>/dev/null || echo "$binary"))"
        run mv -f "$stage" "$bin_path"
        changed=1
    fi

    if [ "$use_systemd" = 0 ]; then
        log "--no-systemd: not installing the unit. Start it with:"
        echo "    (set -a; . $env_file; set +a; exec setpriv --reuid=$svc_user --regid=$svc_user --init-groups -- $bin_path serve)"
        return
    fi
    local unit_changed=0
    if [ "$dry_run" = 0 ] && cmp -s "$repo/systemd/callbridge.service" "$unit_path" 2>/dev/null; then
        log "$unit_path is up to date"
    else
        log "installing $unit_path"
        run install -m 0644 -o root -g root "$repo/systemd/callbridge.service" "$unit_path"
        unit_changed=1
    fi
    # Type=notify-reload (the drop-in of earlier versions) cannot report a
    # refused reload: the unit's Type=notify with ExecReload=callbridge
    # reload can. Other files in the directory are the operator's.
    if [ -e "$dropin_path" ]; then
        log "removing $dropin_path (left by an earlier version: under its Type=notify-reload a refused certificate reload still reported success)"
        run rm -f "$dropin_path"
        run rmdir --ignore-fail-on-non-empty "$dropin_dir"
        unit_changed=1
    fi
    if [ "$unit_changed" = 1 ]; then
        run systemctl daemon-reload
        changed=1
    fi
    # The env file edited since the service started?
    if [ "$was_active" = 1 ] && [ "$dry_run" = 0 ]; then
        local since
        since="$(systemctl show -p ActiveEnterTimestamp --value "$service" 2>/dev/null)"
        since="$(date -d "$since" +%s 2>/dev/null || echo 0)"
        [ "$(stat -c %Y "$env_file")" -lt "$since" ] || changed=1
    fi
    log "enabling $service"
    run systemctl enable --quiet "$service"
    if [ "$was_active" = 1 ] && [ "$changed" = 0 ]; then
        log "$service already runs this binary, unit and configuration: not restarting (dialer connections kept)"
        return
    fi
    log "(re)starting $service"
    if [ "$dry_run" = 1 ]; then
        run systemctl restart "$service"
        return
    fi
    restarted=1
    # Type=notify: restart returns once the daemon sent READY=1, or fails.
    if ! systemctl restart "$service"; then
        rollback
        die "$E_START" "$service failed to start (journalctl -u $service)"
    fi
}

health_check() {
    read_env_file "$env_file"
    local addr port host local_ip url insecure=()
    addr="$(env_value CALLBRIDGE_LISTEN || echo 127.0.0.1:8443)"
    port="${addr##*:}" host="${addr%:*}"
    case "$host" in
        0.0.0.0|'[::]'|'') local_ip=127.0.0.1 ;;
        '['*']') local_ip="${host#[}"; local_ip="${local_ip%]}" ;;
        *) local_ip="$host" ;;
    esac
    # Test CAs are not in the system trust store.
    if [ "$staging" = 1 ] || [ -n "$acme_server" ]; then insecure=(--insecure); fi
    if [ "$port" = 443 ]; then url="https://$domain/health"; else url="https://$domain:$port/health"; fi

    log "checking $url on this host"
    local ok=0
    for _ in $(seq 1 20); do
        if curl -fsS --max-time 5 "${insecure[@]}" --resolve "$domain:$port:$local_ip" "$url" >/dev/null 2>&1; then
            ok=1; break
        fi
        sleep 1
    done
    if [ "$ok" = 0 ]; then
        [ "$restarted" = 0 ] || rollback
        die "$E_START" "$service started but $url does not answer on $local_ip:$port"
    fi
    log "checking $url through DNS"
    local body
    if body="$(curl -fsS --max-time 10 "${insecure[@]}" "$url" 2>&1)"; then
        log "healthy: $body"
    else
        warn "$service is running, but $url is not reachable from here: $body"
        die "$E_HEALTH" "check that $domain resolves to this host and that TCP $port is open in the firewall"
    fi
}

# ----------------------------------------------------------------- main
[ "$dry_run" = 0 ] || log "dry run: nothing is changed"
if [ "$cert_only" = 1 ]; then
    if [ "$dry_run" = 0 ] && ! getent group "$tls_group" >/dev/null; then
        die "$E_USAGE" "group '$tls_group' does not exist (--tls-group)"
    fi
    obtain_certificate
    install_hook
    log "done: certificate in $tls_dir, renewals handled by $certbot_config/renewal-hooks/deploy/callbridge"
    exit 0
fi

prepare_binary
trap '[ -z "$stage" ] || [ ! -e "$stage" ] || rm -f "$stage"' EXIT
setup_user_and_config
obtain_certificate
install_hook
check_config
install_and_start
if [ "$use_systemd" = 1 ]; then
    if [ "$dry_run" = 1 ]; then
        echo "[dry-run] curl https://$domain/health (on this host, then through DNS)"
    else
        health_check
    fi
fi
if [ "$dry_run" = 0 ]; then
    read_env_file "$env_file"
    listen_port="$(env_value CALLBRIDGE_LISTEN || echo 127.0.0.1:8443)"
    listen_port="${listen_port##*:}"
    public="$domain"
    [ "$listen_port" = 443 ] || public="$domain:$listen_port"
    log "deployed"
    echo "    Telnyx webhook URL:  https://$public/webhooks/telnyx"
    echo "    dialer WebSocket:    wss://$public/ws"
    echo "    configuration:       $env_file"
    if [ "$use_systemd" = 1 ]; then
        echo "    logs:                journalctl -u $service -f"
        echo "    certificate reload:  systemctl reload $service   (fails, naming the problem in the log, when the files are refused)"
    fi
    if [ "$admin_token_missing" = 1 ]; then
        warn "$env_file still has no CALLBRIDGE_ADMIN_TOKEN: certificate reloads will fail (see above)"
    fi
fi
