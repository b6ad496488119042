#!/usr/bin/env bash
# Benchmark suite: the release daemon driven by `callbridge-bench`
# (src/bin/callbridge-bench.rs) on this machine's loopback.
#
#   1. memory store, as fast as the posters go
#   2. memory store at a fixed 2,000 webhooks/s (delivery latency)
#   3. memory store, idle connections: RSS per connection
#   4. MongoDB (SecantusDB on loopback)
#   5. two instances on one MongoDB
#   6. two instances on one MongoDB, one killed (SIGKILL) and restarted
#      mid-run; its clients resume on the other with `since`
#
# Sizes come from the environment (defaults in brackets): MEM_WEBHOOKS
# [20000], RATE_WEBHOOKS [20000], IDLE_CONNS [10000], MONGO_WEBHOOKS [3000],
# CONCURRENCY [16], USERS [50], CONNS [100]. Figures are measurements of
# this machine; nothing here asserts a target. A run that loses an event
# exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

MEM_WEBHOOKS="${MEM_WEBHOOKS:-20000}"
RATE_WEBHOOKS="${RATE_WEBHOOKS:-20000}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
MONGO_WEBHOOKS="${MONGO_WEBHOOKS:-3000}"
CONCURRENCY="${CONCURRENCY:-16}"
USERS="${USERS:-50}"
CONNS="${CONNS:-100}"

cargo build --release --locked --bins >&2
BIN=target/release/callbridge
BENCH=target/release/callbridge-bench
ADMIN=bench-admin-token-0123456789
SECANTUSD="$(scripts/secantus.sh)"
# 10,000 connections need 20,000+ descriptors (client and server side).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
DATA="$(mktemp -d)"
# Every process started here, for the cleanup (daemons are started from
# command substitutions, i.e. subshells, so an array would not see them).
PIDS="$DATA/pids"
cleanup() {
    [ -f "$PIDS" ] && while read -r p; do kill "$p" 2>/dev/null || true; done <"$PIDS"
    rm -rf "$DATA"
}
trap cleanup EXIT

wait_ready() { # url ca
    for _ in $(seq 1 300); do
        if curl -sf --cacert "$2" "$1/ready" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "daemon at $1 did not become ready" >&2; return 1
}

# start_daemon PORT [ENV=VALUE...]: prints the PID
start_daemon() {
    local port="$1"; shift
    env "$@" CALLBRIDGE_DATA_DIR="$DATA" CALLBRIDGE_LISTEN="127.0.0.1:$port" \
        CALLBRIDGE_ADMIN_TOKEN="$ADMIN" RUST_LOG=warn "$BIN" serve --dev >/dev/null 2>>"$DATA/log" &
    local pid=$!
    echo "$pid" >>"$PIDS"
    wait_ready "https://127.0.0.1:$port" "$DATA/ca.pem"
    echo "$pid"
}

stop() { # pid: SIGTERM and wait until it is gone
    kill "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
}

bench() { # label url[,url] pid [args...]
    local label="$1" urls="$2" pid="$3"; shift 3
    "$BENCH" --url "$urls" --data-dir "$DATA" --admin-token "$ADMIN" --pid "$pid" --label "$label" "$@"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
if command -v openssl >/dev/null; then
    echo "Ed25519 verify ceiling: $(openssl speed -seconds 2 ed25519 2>/dev/null | awk '/^ *253 bits/{print $NF}') verifies/s on one core (openssl speed ed25519)"
fi

db_port="$(free_port)"
"$SECANTUSD" --port "$db_port" --storage-path :memory: >/dev/null 2>&1 &
echo "$!" >>"$PIDS"
MONGO="mongodb://127.0.0.1:${db_port}/?replicaSet=secantus"
STD=(--users "$USERS" --conns "$CONNS" --concurrency "$CONCURRENCY")

echo; echo "== 1-3. embedded store"
port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI=)"
bench memory "https://127.0.0.1:$port" "$pid" "${STD[@]}" --webhooks "$MEM_WEBHOOKS"
bench memory-2000/s "https://127.0.0.1:$port" "$pid" "${STD[@]}" --webhooks "$RATE_WEBHOOKS" --rate 2000 --no-setup
stop "$pid"
port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI=)"
bench idle "https://127.0.0.1:$port" "$pid" --users 1000 --conns "$IDLE_CONNS" --idle-only
stop "$pid"

echo; echo "== 4. MongoDB"
port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI="$MONGO" CALLBRIDGE_MONGODB_DB=bench1)"
bench mongodb "https://127.0.0.1:$port" "$pid" "${STD[@]}" --webhooks "$MONGO_WEBHOOKS"
stop "$pid"

echo; echo "== 5. two instances on one MongoDB"
pa="$(free_port)"; pb="$(free_port)"
a="$(start_daemon "$pa" CALLBRIDGE_MONGODB_URI="$MONGO" CALLBRIDGE_MONGODB_DB=bench2)"
b="$(start_daemon "$pb" CALLBRIDGE_MONGODB_URI="$MONGO" CALLBRIDGE_MONGODB_DB=bench2)"
bench mongodb-2x "https://127.0.0.1:$pa,https://127.0.0.1:$pb" "$a" "${STD[@]}" --webhooks "$MONGO_WEBHOOKS"

echo; echo "== 6. two instances, B killed and restarted mid-run"
bench mongodb-2x-kill "https://127.0.0.1:$pa,https://127.0.0.1:$pb" "$a" "${STD[@]}" --webhooks "$MONGO_WEBHOOKS" --no-setup &
bench_pid=$!
sleep 8
kill -9 "$b"
echo "   (killed B with SIGKILL; restarting it in 3 s)"
sleep 3
b="$(start_daemon "$pb" CALLBRIDGE_MONGODB_URI="$MONGO" CALLBRIDGE_MONGODB_DB=bench2)"
wait "$bench_pid"
