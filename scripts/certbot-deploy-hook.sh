#!/usr/bin/env bash
# certbot deploy hook for callbridge.
#
# certbot runs it after each successful renewal with RENEWED_LINEAGE set to
# the certificate's live/ directory. It copies fullchain.pem and privkey.pem
# to the directory the service reads (the service user cannot read
# /etc/letsencrypt/archive), owned root:GROUP, key 0640, chain 0644, each
# replaced atomically, and then makes the running daemon re-read them
# (SIGHUP): no restart, no dialer connection dropped.
#
# scripts/deploy.sh installs it as /usr/local/lib/callbridge/certbot-deploy-hook.sh
# and, in certbot's renewal-hooks/deploy/ directory, a two-line wrapper that
# calls it with the options of that installation.
#
# Reload target, first that applies:
#   --pid PID       or env CALLBRIDGE_RELOAD_PID      kill -HUP PID
#   --pidfile FILE  or env CALLBRIDGE_RELOAD_PIDFILE  kill -HUP "$(cat FILE)"
#   systemd running and the unit active               systemctl reload UNIT
#   otherwise: nothing to reload (the service reads the files when it starts)
set -euo pipefail

prog="${0##*/}"
tls_dir="${CALLBRIDGE_TLS_DIR:-/etc/callbridge/tls}"
group="${CALLBRIDGE_TLS_GROUP:-callbridge}"
service="${CALLBRIDGE_SERVICE:-callbridge}"
reload_pid="${CALLBRIDGE_RELOAD_PID:-}"
pidfile="${CALLBRIDGE_RELOAD_PIDFILE:-}"
domain=""
lineage="${RENEWED_LINEAGE:-}"

usage() {
    cat <<EOF
Usage: $prog [OPTIONS]

certbot deploy hook: copies the renewed certificate (RENEWED_LINEAGE, set by
certbot) to where callbridge reads it and reloads callbridge (SIGHUP).

Options:
  --tls-dir DIR      destination of fullchain.pem and privkey.pem
                     [env CALLBRIDGE_TLS_DIR, default /etc/callbridge/tls]
  --group GROUP      group that may read the key (the service's group)
                     [env CALLBRIDGE_TLS_GROUP, default callbridge]
  --domain NAME      act only when the renewed lineage is live/NAME (other
                     certificates on the host are ignored)
  --lineage DIR      the certificate's live/ directory [env RENEWED_LINEAGE]
  --service UNIT     systemd unit to reload [env CALLBRIDGE_SERVICE, default callbridge]
  --pid PID          send SIGHUP to this process instead of using systemd
                     [env CALLBRIDGE_RELOAD_PID]
  --pidfile FILE     send SIGHUP to the process in FILE [env CALLBRIDGE_RELOAD_PIDFILE]
  -h, --help         this text
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

if [ -z "$reload_pid" ] && [ -n "$pidfile" ]; then
    [ -r "$pidfile" ] || die "cannot read pidfile $pidfile"
    reload_pid="$(tr -dc '0-9' <"$pidfile")"
    [ -n "$reload_pid" ] || die "no PID in $pidfile"
fi
if [ -n "$reload_pid" ]; then
    kill -HUP "$reload_pid" || die "could not signal PID $reload_pid"
    log "sent SIGHUP to PID $reload_pid"
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    if systemctl is-active --quiet "$service"; then
        systemctl reload "$service" || die "systemctl reload $service failed (journalctl -u $service)"
        log "reloaded $service"
    else
        log "$service is not running; it will read the new certificate when it starts"
    fi
else
    log "no systemd and no PID given; nothing reloaded"
fi
