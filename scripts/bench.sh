#!/usr/bin/env bash
# Benchmark: the release daemon on the embedded store and on MongoDB
# (SecantusDB on loopback), driven by the `callbridge-bench` load tool.
# Prints throughput, webhook latency, delivery latency, lost events, RSS.
#
# Usage: scripts/bench.sh [--webhooks N] [--concurrency K] [--users U] [--conns C] [--rate R]
# (arguments are passed to callbridge-bench). Figures are measurements of
# this machine; nothing here asserts a target.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bins >&2
BIN=target/release/callbridge
BENCH=target/release/callbridge-bench
ADMIN=bench-admin-token-0123456789
SECANTUSD="$(scripts/secantus.sh)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_ready() { # url ca
    for _ in $(seq 1 200); do
        if curl -sf --cacert "$2" "$1/ready" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "daemon at $1 did not become ready" >&2; return 1
}

db_port="$(free_port)"
"$SECANTUSD" --port "$db_port" --storage-path :memory: >/dev/null 2>&1 &
pids+=($!)
MONGO="mongodb://127.0.0.1:${db_port}/?replicaSet=secantus"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
if command -v openssl >/dev/null; then
    echo "Ed25519 verify ceiling (openssl speed ed25519, 1 core):"
    openssl speed -seconds 2 ed25519 2>/dev/null | grep -E '^ *253 bits' | awk '{print "  verify/s: " $NF}' || true
fi

run() { # label [extra env...]
    local label="$1"; shift
    local dir; dir="$(mktemp -d)"
    local port; port="$(free_port)"
    env "$@" CALLBRIDGE_DATA_DIR="$dir" CALLBRIDGE_LISTEN="127.0.0.1:$port" \
        CALLBRIDGE_ADMIN_TOKEN="$ADMIN" RUST_LOG=warn "$BIN" serve --dev >/dev/null 2>"$dir/log" &
    local pid=$!
    pids+=("$pid")
    wait_ready "https://127.0.0.1:$port" "$dir/ca.pem"
    "$BENCH" --url "https://127.0.0.1:$port" --data-dir "$dir" --admin-token "$ADMIN" \
        --pid "$pid" --label "$label" "${BENCH_ARGS[@]}"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

BENCH_ARGS=("$@")
run memory CALLBRIDGE_MONGODB_URI=
run mongodb CALLBRIDGE_MONGODB_URI="$MONGO" CALLBRIDGE_MONGODB_DB="bench$(date +%s)"
