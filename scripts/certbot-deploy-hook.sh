#!/usr/bin/env bash
# certbot deploy hook for callbridge.
#
# certbot runs it after each successful renewal with RENEWED_LINEAGE set to
# the certificate's live/ directory. It copies fullchain.pem and privkey.pem
# to the directory the service reads (the service user cannot read
# /etc/letsencrypt/archive), owned root:GROUP, key 0640, chain 0644, each
# replaced atomically, and then makes the running daemon re-read them: no
# restart, no dialer connection dropped. When the daemon refuses the new
# files (it keeps serving the previous certificate), the hook exits 1 with
# a message, so certbot reports the hook as failed.
#
# scripts/deploy.sh installs it as /usr/local/lib/callbridge/certbot-deploy-hook.sh
# and, in certbot's renewal-hooks/deploy/ directory, a two-line wrapper that
# calls it with the options of that installation.
#
# Reload, first that applies:
#   --pid/--pidfile/--env-file/--config given (a daemon not run by systemd):
#     with the admin token (env CALLBRIDGE_ADMIN_TOKEN, the --env-file, or
#     the --config file)   callbridge reload: the daemon's answer is checked
#     without it           kill -HUP PID: the outcome is not checked
#   systemd running and the unit active
#                          systemctl reload UNIT (ExecReload=callbridge reload:
#                          fails when the daemon refuses the files)
#   otherwise: nothing to reload (the service reads the files when it starts)
set -euo pipefail

prog="${0##*/}"
tls_dir="${CALLBRIDGE_TLS_DIR:-/etc/callbridge/tls}"
group="${CALLBRIDGE_TLS_GROUP:-callbridge}"
service="${CALLBRIDGE_SERVICE:-callbridge}"
reload_pid="${CALLBRIDGE_RELOAD_PID:-}"
pidfile="${CALLBRIDGE_RELOAD_PIDFILE:-}"
env_file="${CALLBRIDGE_RELOAD_ENV_FILE:-}"
config="${CALLBRIDGE_RELOAD_CONFIG:-}"
callbridge_bin="${CALLBRIDGE_RELOAD_BIN:-}"
domain=""
lineage="${RENEWED_LINEAGE:-}"

usage() {
    cat <<EOF
Usage: $prog [OPTIONS]

certbot deploy hook: copies the renewed certificate (RENEWED_LINEAGE, set by
certbot) to where callbridge reads it and has callbridge reload it. Exits 1
when callbridge refuses the new files (it keeps the previous certificate).

Options:
  --tls-dir DIR      destination of fullchain.pem and privkey.pem
                     [env CALLBRIDGE_TLS_DIR, default /etc/callbridge/tls]
  --group GROUP      group that may read the key (the service's group)
                     [env CALLBRIDGE_TLS_GROUP, default callbridge]
  --domain NAME      act only when the renewed lineage is live/NAME (other
                     certificates on the host are ignored)
  --lineage DIR      the certificate's live/ directory [env RENEWED_LINEAGE]
  --service UNIT     systemd unit to reload [env CALLBRIDGE_SERVICE, default callbridge]
  --pid PID          a daemon not run by systemd: send SIGHUP to this process
                     when no admin token is known (outcome not checked)
                     [env CALLBRIDGE_RELOAD_PID]
  --pidfile FILE     the same, with the PID read from FILE [env CALLBRIDGE_RELOAD_PIDFILE]
  --env-file FILE    a daemon not run by systemd: its KEY=VALUE environment
                     file (CALLBRIDGE_ADMIN_TOKEN, _LISTEN, _TLS_CERT), for
                     "callbridge reload" [env CALLBRIDGE_RELOAD_ENV_FILE]
  --config FILE      the same with its TOML file (callbridge reload --config)
                     [env CALLBRIDGE_RELOAD_CONFIG]
  --callbridge PATH  the callbridge binary [env CALLBRIDGE_RELOAD_BIN; default:
                     callbridge in PATH, else /usr/local/bin/callbridge]
  -h, --help         this text

Without systemd, "callbridge reload" (the daemon's own answer, exit 1 when
it refuses the files) is used whenever the admin token is known: in the
environment (CALLBRIDGE_ADMIN_TOKEN), in --env-file or in --config. Only
without it does the hook fall back to SIGHUP, which reports nothing.
EOF
}

die() { echo "$prog: error: $*" >&2; exit 1; }
log() { echo "$prog: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --tls-dir) tls_dir="${2:?--tls-dir needs a value}"; shift 2 ;;
        --group) group="${2:?--group needs a value}"; shift 2 ;;
        --domain) domain="${2:?--domain needs a value}"; shift 2 ;;
        --lineage) lineage="${2:?--lineage needs a value}"; shift 2 ;;
        --service) service="${2:?--service needs a value}"; shift 2 ;;
        --pid) reload_pid="${2:?--pid needs a value}"; shift 2 ;;
        --pidfile) pidfile="${2:?--pidfile needs a value}"; shift 2 ;;
        --env-file) env_file="${2:?--env-file needs a value}"; shift 2 ;;
        --config) config="${2:?--config needs a value}"; shift 2 ;;
        --callbridge) callbridge_bin="${2:?--callbridge needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$prog: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

[ -n "$lineage" ] || die "RENEWED_LINEAGE is not set (certbot sets it; or pass --lineage DIR)"
lineage="${lineage%/}"
if [ -n "$domain" ] && [ "${lineage##*/}" != "$domain" ]; then
    log "ignoring ${lineage##*/} (not $domain)"
    exit 0
fi
for f in fullchain.pem privkey.pem; do
    [ -r "$lineage/$f" ] || die "cannot read $lineage/$f"
done
getent group "$group" >/dev/null || die "group '$group' does not exist"

# The key must match the chain's leaf, or the daemon would refuse the reload.
cert_pub="$(openssl x509 -in "$lineage/fullchain.pem" -noout -pubkey)" \
    || die "$lineage/fullchain.pem is not a PEM certificate"
key_pub="$(openssl pkey -in "$lineage/privkey.pem" -pubout)" \
    || die "$lineage/privkey.pem is not a PEM private key"
[ "$cert_pub" = "$key_pub" ] || die "$lineage: privkey.pem does not match fullchain.pem"

if [ ! -d "$tls_dir" ]; then
    install -d -m 0750 -o root -g "$group" "$tls_dir"
fi

# Already in place (deploy.sh re-run): fix owners and modes, reload nothing.
if cmp -s "$lineage/fullchain.pem" "$tls_dir/fullchain.pem" && cmp -s "$lineage/privkey.pem" "$tls_dir/privkey.pem"; then
    chown "root:$group" "$tls_dir/fullchain.pem" "$tls_dir/privkey.pem"
    chmod 0644 "$tls_dir/fullchain.pem"
    chmod 0640 "$tls_dir/privkey.pem"
    log "${lineage##*/} is already installed in $tls_dir; nothing to reload"
    exit 0
fi

# Copy to a temporary name in the same directory, set owner and mode, then
# rename over the old file: the daemon never sees a partial file. The reload
# comes after both are in place.
tmp_files=()
cleanup() { [ ${#tmp_files[@]} -eq 0 ] || rm -f "${tmp_files[@]}"; }
trap cleanup EXIT
copy() { # SRC NAME MODE
    local tmp
    tmp="$(mktemp "$tls_dir/.$2.XXXXXX")"
    tmp_files+=("$tmp")
    cat "$1" >"$tmp"
    chown "root:$group" "$tmp"
    chmod "$3" "$tmp"
    mv -f "$tmp" "$tls_dir/$2"
}
copy "$lineage/privkey.pem" privkey.pem 0640
copy "$lineage/fullchain.pem" fullchain.pem 0644
serial="$(openssl x509 -in "$tls_dir/fullchain.pem" -noout -serial)"
log "installed ${lineage##*/} (${serial}) in $tls_dir"

# `callbridge reload` (POST /api/reload): 0 once the new certificate is in
# service; otherwise the daemon's reason on stderr and a failed hook.
# Runs in a subshell: with --env-file only that file's CALLBRIDGE_*
# variables count, as under systemd.
direct_reload() {
    local out rc=0
    if [ -z "$callbridge_bin" ]; then
        callbridge_bin="$(command -v callbridge || echo /usr/local/bin/callbridge)"
    fi
    [ -x "$callbridge_bin" ] || die "cannot run $callbridge_bin to reload the daemon (--callbridge PATH)"
    out="$(
        if [ -n "$env_file" ]; then
            for v in $(compgen -e); do
                case "$v" in CALLBRIDGE_*) unset "$v" ;; esac
            done
            load_env_file "$env_file"
        fi
        "$callbridge_bin" reload ${config:+--config "$config"} 2>&1
    )" || rc=$?
    if [ "$rc" = 0 ]; then
        log "callbridge reload: ${out#reloaded: }"
        return 0
    fi
    printf '%s\n' "$out" >&2
    die "callbridge reload failed (exit $rc, above): the running daemon did not take the new certificate and keeps serving the previous one; its log has the reason"
}

load_env_file() { # FILE: export its CALLBRIDGE_*=VALUE lines, as systemd reads them
    local line key val
    [ -r "$1" ] || die "cannot read $1 (--env-file)"
    while IFS= read -r line || [ -n "$line" ]; do
        [[ "$line" =~ ^[[:space:]]*(CALLBRIDGE_[A-Z0-9_]*)=(.*)$ ]] || continue
        key="${BASH_REMATCH[1]}" val="${BASH_REMATCH[2]}"
        if [[ "$val" =~ ^\"(.*)\"$ ]] || [[ "$val" =~ ^\'(.*)\'$ ]]; then
            val="${BASH_REMATCH[1]}"
        fi
        export "$key=$val"
    done <"$1"
}

token_known() { # is an admin token at hand for `callbridge reload`?
    [ -z "$config" ] || return 0
    if [ -n "$env_file" ]; then
        (load_env_file "$env_file"; [ -n "${CALLBRIDGE_ADMIN_TOKEN:-}" ])
    else
        [ -n "${CALLBRIDGE_ADMIN_TOKEN:-}" ]
    fi
}

if [ -z "$reload_pid" ] && [ -n "$pidfile" ]; then
    [ -r "$pidfile" ] || die "cannot read pidfile $pidfile"
    reload_pid="$(tr -dc '0-9' <"$pidfile")"
    [ -n "$reload_pid" ] || die "no PID in $pidfile"
fi
if [ -n "$reload_pid" ] || [ -n "$env_file" ] || [ -n "$config" ]; then
    if token_known; then
        direct_reload
    elif [ -n "$reload_pid" ]; then
        kill -HUP "$reload_pid" || die "could not signal PID $reload_pid"
        log "sent SIGHUP to PID $reload_pid; outcome not checked (SIGHUP reports nothing: give the hook the admin token, with --env-file or CALLBRIDGE_ADMIN_TOKEN, to have callbridge reload check it); the daemon logs 'TLS certificate reloaded' or why it refused"
    else
        die "no CALLBRIDGE_ADMIN_TOKEN in $env_file: cannot ask the daemon to reload (callbridge reload needs it)"
    fi
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    if systemctl is-active --quiet "$service"; then
        # ExecReload=callbridge reload: fails when the daemon refuses the
        # files. systemctl prints no reason; the journal has it.
        if ! systemctl reload "$service"; then
            journalctl -u "$service" -n 5 --no-pager -o cat >&2 2>/dev/null || true
            die "systemctl reload $service failed: the daemon did not take the new certificate and keeps serving the previous one; the reason is in journalctl -u $service"
        fi
        log "reloaded $service"
    else
        log "$service is not running; it will read the new certificate when it starts"
    fi
else
    log "no systemd and no PID given; nothing reloaded"
fi
