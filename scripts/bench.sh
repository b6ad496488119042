#!/usr/bin/env bash
# Benchmark suite: the release daemon driven by `callbridge-bench`
# (src/bin/callbridge-bench.rs) on this machine's loopback. Every run
# prints throughput, latencies, lost events, and the daemon's CPU per
# webhook and per delivered frame (from /proc/PID/stat): with the load
# generator on the same cores, throughput is bounded by the generator, CPU
# per event is the daemon's own cost.
#
# MongoDB runs count the daemon's commands (CALLBRIDGE_MONGODB_COUNT_COMMANDS).
#
#   memory     embedded store, as fast as the posters go (50 users, 100 sockets)
#   rate       embedded store at a fixed 2,000 webhooks/s, 1,000 users on
#              1,000 sockets (delivery latency, CPU at everyday load)
#   broadcast  embedded store, 200 users on 200 sockets, every webhook to
#              all of them (CALLBRIDGE_UNROUTED=broadcast)
#   idle       embedded store, idle connections: RSS per connection
#   mongodb    MongoDB (SecantusDB on loopback), routed; commands per webhook
#   mongodb-broadcast  MongoDB, every webhook to 200 users, one poster;
#              commands per webhook
#   mongodb-2x two instances on one MongoDB
#   kill       two instances on one MongoDB, one killed (SIGKILL) and
#              restarted mid-run; its clients resume on the other with
#              `since` (the delivery max is the stall)
#   outbound   the `rate` run three times on fresh daemons: no endpoint,
#              one endpoint answering 200, one endpoint that never answers
#              (daemon CPU per webhook and dialer delivery latency compared)
#   console    the `rate` run on fresh daemons without and with one
#              operator's console stream open and read (callbridge-bench
#              --console), alternating, CONSOLE_ROUNDS [2] times each: what
#              an open /console costs the daemon
#   messages   embedded store, §8 messages from one session to a call of
#              2 users (one recipient; the sender's own sessions get them too)
#   messages-room  embedded store, messages to a call of 200 users
#   mongodb-messages  MongoDB, messages to a call of 2 users, one at a time
#   mongodb-messages-room  MongoDB, messages to a call of 200 users, one
#              at a time (they share the 200 counters, so more in flight
#              only queue)
#   recovery   the `rate` run on fresh daemons without and with a backlog of
#              RECOVERY_BACKLOG failed deliveries in a Telnyx API stand-in
#              (callbridge-bench --recovery), recovered by POST /api/recover
#              2 s into the webhooks, alternating, RECOVERY_ROUNDS [2] times
#              each: events ingested per second, the daemon's RSS during the
#              run, the webhooks' delivery latency while it lasts
#   mongodb-recovery  the same on MongoDB with a smaller backlog
#              (MONGO_RECOVERY_BACKLOG: SecantusDB takes ~10 ms per ingest
#              and a run ingests one at a time): USERS on CONNS sockets at a
#              fixed MONGO_RECOVERY_RATE [30] webhooks/s from 2 posters (16
#              posters, started together, would post in bursts of 16)
#   actions    embedded store, ACTIONS_COUNT call actions (`send_dtmf`,
#              contract §14) from one dialer session on a call bound to its
#              user, through the daemon to a Telnyx API stand-in in the load
#              generator (callbridge-bench --actions), on a fresh daemon per
#              window of ACTIONS_WINDOWS ["1 4"] actions in flight (1: one
#              at a time; the daemon runs 4 of a connection at once):
#              client -> stand-in and stand-in -> client latency (what
#              callbridge adds), round trip, actions/s, daemon CPU per
#              action; CALLBRIDGE_CALL_ACTIONS at its default
#   connect    embedded store, CONNECTS [2000] WebSocket connects of USERS
#              users, CONNECT_CONCURRENCY [4] at a time (callbridge-bench
#              --connects): each TCP + a full TLS handshake + upgrade +
#              authentication until `connected`, then a normal close; with
#              HS256 tokens (the dev secret) and with RS256 tokens verified
#              with an identity provider's JWKS (a stand-in in the load
#              generator serving one RSA key on a loopback port), on fresh
#              daemons configured alike (CALLBRIDGE_JWT_JWKS_URL and the dev
#              secret), alternating, CONNECT_ROUNDS [2] times each:
#              connects/s, connect latency to `connected`, daemon CPU per
#              connect and its difference between the two token kinds, and
#              the daemon's token verification alone, timed in the load
#              generator
#
# SCENARIOS picks some (default: all, in this order), e.g.
# SCENARIOS="rate broadcast" scripts/bench.sh. DAEMON_BIN runs another
# build of the daemon under the same load (before/after comparisons).
# Sizes come from the environment (defaults in brackets): MEM_WEBHOOKS
# [20000], RATE_WEBHOOKS [20000], BCAST_WEBHOOKS [2000], IDLE_CONNS [10000],
# MONGO_WEBHOOKS [3000], MONGO_BCAST_WEBHOOKS [50], MSG_COUNT [5000],
# MONGO_MSG_COUNT [50], RECOVERY_BACKLOG [10000], MONGO_RECOVERY_BACKLOG
# [1000], MONGO_RECOVERY_WEBHOOKS [600], ACTIONS_COUNT [5000], CONNECTS
# [2000], CONNECT_CONCURRENCY [4], CONNECT_ROUNDS [2], CONCURRENCY [16],
# USERS [50], CONNS [100]. Figures are measurements of this machine;
# nothing here asserts a target. A run that loses an event exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

MEM_WEBHOOKS="${MEM_WEBHOOKS:-20000}"
RATE_WEBHOOKS="${RATE_WEBHOOKS:-20000}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
MONGO_WEBHOOKS="${MONGO_WEBHOOKS:-3000}"
BCAST_WEBHOOKS="${BCAST_WEBHOOKS:-2000}"
MONGO_BCAST_WEBHOOKS="${MONGO_BCAST_WEBHOOKS:-50}"
MSG_COUNT="${MSG_COUNT:-5000}"
MONGO_MSG_COUNT="${MONGO_MSG_COUNT:-50}"
CONSOLE_ROUNDS="${CONSOLE_ROUNDS:-2}"
RECOVERY_BACKLOG="${RECOVERY_BACKLOG:-10000}"
MONGO_RECOVERY_BACKLOG="${MONGO_RECOVERY_BACKLOG:-1000}"
MONGO_RECOVERY_RATE="${MONGO_RECOVERY_RATE:-30}"
MONGO_RECOVERY_WEBHOOKS="${MONGO_RECOVERY_WEBHOOKS:-600}"
RECOVERY_ROUNDS="${RECOVERY_ROUNDS:-2}"
ACTIONS_COUNT="${ACTIONS_COUNT:-5000}"
ACTIONS_WINDOWS="${ACTIONS_WINDOWS:-1 4}"
CONNECTS="${CONNECTS:-2000}"
CONNECT_CONCURRENCY="${CONNECT_CONCURRENCY:-4}"
CONNECT_ROUNDS="${CONNECT_ROUNDS:-2}"
SCENARIOS="${SCENARIOS:-memory rate broadcast idle mongodb mongodb-broadcast mongodb-2x kill messages messages-room mongodb-messages mongodb-messages-room outbound console recovery mongodb-recovery actions connect}"
CONCURRENCY="${CONCURRENCY:-16}"
USERS="${USERS:-50}"
CONNS="${CONNS:-100}"

cargo build --release --locked --bins >&2
BIN="${DAEMON_BIN:-target/release/callbridge}"
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

wait_ready() { # url ca [probe: ready (default) or health]
    for _ in $(seq 1 300); do
        if curl -sf --cacert "$2" "$1/${3:-ready}" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "daemon at $1 did not become ready" >&2; return 1
}

# start_daemon PORT [ENV=VALUE...]: prints the PID. It waits for /ready, or
# with PROBE=health for /health only (a daemon whose JWKS is served by the
# load generator is not ready before that runs).
start_daemon() {
    local port="$1"; shift
    env "$@" CALLBRIDGE_MONGODB_COUNT_COMMANDS=true CALLBRIDGE_DATA_DIR="$DATA" CALLBRIDGE_LISTEN="127.0.0.1:$port" \
        CALLBRIDGE_ADMIN_TOKEN="$ADMIN" RUST_LOG=warn "$BIN" serve --dev >/dev/null 2>>"$DATA/log" &
    local pid=$!
    echo "$pid" >>"$PIDS"
    wait_ready "https://127.0.0.1:$port" "$DATA/ca.pem" "${PROBE:-ready}"
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

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB, load average $(cut -d" " -f1-3 /proc/loadavg)"
if command -v openssl >/dev/null; then
    echo "Ed25519 verify ceiling: $(openssl speed -seconds 2 ed25519 2>/dev/null | awk '/^ *253 bits/{print $NF}') verifies/s on one core (openssl speed ed25519)"
fi

db_port="$(free_port)"
"$SECANTUSD" --port "$db_port" --storage-path :memory: >/dev/null 2>&1 &
echo "$!" >>"$PIDS"
MONGO="mongodb://127.0.0.1:${db_port}/?replicaSet=secantus"
STD=(--users "$USERS" --conns "$CONNS" --concurrency "$CONCURRENCY")

want() { [[ " $SCENARIOS " == *" $1 "* ]]; }

if want memory; then
    echo; echo "== memory: embedded store, max rate"
    port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI=)"
    bench memory "https://127.0.0.1:$port" "$pid" "${STD[@]}" --webhooks "$MEM_WEBHOOKS"
    stop "$pid"
fi
if want rate; then
    echo; echo "== rate: embedded store, fixed 2,000 webhooks/s, 1,000 sockets"
    port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI=)"
    bench memory-2000/s "https://127.0.0.1:$port" "$pid" --users 1000 --conns 1000 \
        --concurrency "$CONCURRENCY" --webhooks "$RATE_WEBHOOKS" --rate 2000
    stop "$pid"
fi
if want broadcast; then
    echo; echo "== broadcast: embedded store, every webhook to 200 sockets"
    port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI= CALLBRIDGE_UNROUTED=broadcast)"
    bench broadcast "https://127.0.0.1:$port" "$pid" --users 200 --conns 200 \
        --concurrency "$CONCURRENCY" --webhooks "$BCAST_WEBHOOKS" --broadcast
    stop "$pid"
fi
if want idle; then
    echo; echo "== idle: RSS per connection"
    port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI=)"
    bench idle "https://127.0.0.1:$port" "$pid" --users 1000 --conns "$IDLE_CONNS" --idle-only
    stop "$pid"
fi
if want mongodb; then
    echo; echo "== mongodb: one instance, routed"
    port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI="$MONGO" CALLBRIDGE_MONGODB_DB=bench1)"
    bench mongodb "https://127.0.0.1:$port" "$pid" "${STD[@]}" --webhooks "$MONGO_WEBHOOKS"
    stop "$pid"
fi
if want mongodb-broadcast; then
    echo; echo "== mongodb-broadcast: one instance, every webhook to 200 users"
    port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI="$MONGO" CALLBRIDGE_MONGODB_DB=bench3 CALLBRIDGE_UNROUTED=broadcast)"
    # One poster: every webhook takes the same 200 counters, so concurrent
    # ones only queue behind each other (SecantusDB, a Python server, takes
    # ~0.5 s per 200-recipient transaction here).
    bench mongodb-broadcast "https://127.0.0.1:$port" "$pid" --users 200 --conns 200 \
        --concurrency 1 --webhooks "$MONGO_BCAST_WEBHOOKS" --broadcast
    stop "$pid"
fi
if want mongodb-2x || want kill; then
    pa="$(free_port)"; pb="$(free_port)"
    a="$(start_daemon "$pa" CALLBRIDGE_MONGODB_URI="$MONGO" CALLBRIDGE_MONGODB_DB=bench2)"
    b="$(start_daemon "$pb" CALLBRIDGE_MONGODB_URI="$MONGO" CALLBRIDGE_MONGODB_DB=bench2)"
    setup=()
fi
if want mongodb-2x; then
    echo; echo "== mongodb-2x: two instances on one MongoDB"
    bench mongodb-2x "https://127.0.0.1:$pa,https://127.0.0.1:$pb" "$a" "${STD[@]}" --webhooks "$MONGO_WEBHOOKS"
    setup=(--no-setup)
fi
if want kill; then
    echo; echo "== kill: two instances, B killed and restarted mid-run"
    bench mongodb-2x-kill "https://127.0.0.1:$pa,https://127.0.0.1:$pb" "$a" "${STD[@]}" --webhooks "$MONGO_WEBHOOKS" "${setup[@]}" &
    bench_pid=$!
    sleep 8
    kill -9 "$b"
    echo "   (killed B with SIGKILL; restarting it in 3 s)"
    sleep 3
    b="$(start_daemon "$pb" CALLBRIDGE_MONGODB_URI="$MONGO" CALLBRIDGE_MONGODB_DB=bench2)"
    wait "$bench_pid"
fi
# The sender sends far more than a dialer's 300 a minute.
MSG_ENV=(CALLBRIDGE_CLIENT_RATE_PER_MIN=100000000)
if want messages; then
    echo; echo "== messages: embedded store, to a call of 2 users"
    port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI= "${MSG_ENV[@]}")"
    bench messages "https://127.0.0.1:$port" "$pid" --users 2 --conns 2 --messages "$MSG_COUNT"
    stop "$pid"
fi
if want messages-room; then
    echo; echo "== messages-room: embedded store, to a call of 200 users"
    port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI= "${MSG_ENV[@]}")"
    bench messages-room "https://127.0.0.1:$port" "$pid" --users 200 --conns 200 --messages "$MSG_COUNT"
    stop "$pid"
fi
if want mongodb-messages; then
    echo; echo "== mongodb-messages: MongoDB, to a call of 2 users"
    port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI="$MONGO" CALLBRIDGE_MONGODB_DB=bench5 "${MSG_ENV[@]}")"
    bench mongodb-messages "https://127.0.0.1:$port" "$pid" --users 2 --conns 2 --messages "$MONGO_MSG_COUNT" --send-window 1
    stop "$pid"
fi
if want mongodb-messages-room; then
    echo; echo "== mongodb-messages-room: MongoDB, to a call of 200 users"
    port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI="$MONGO" CALLBRIDGE_MONGODB_DB=bench4 "${MSG_ENV[@]}")"
    bench mongodb-messages-room "https://127.0.0.1:$port" "$pid" --users 200 --conns 200 --messages "$MONGO_MSG_COUNT" --send-window 1
    stop "$pid"
fi
if want outbound; then
    echo; echo "== outbound: the fixed-rate run without, with a healthy and with a hanging endpoint"
    for mode in none ok hang; do
        port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI=)"
        extra=(); [ "$mode" = none ] || extra=(--outbound "$mode")
        bench "outbound-$mode" "https://127.0.0.1:$port" "$pid" --users 1000 --conns 1000 \
            --concurrency "$CONCURRENCY" --webhooks "$RATE_WEBHOOKS" --rate 2000 "${extra[@]}"
        stop "$pid"
    done
fi
if want console; then
    echo; echo "== console: the fixed-rate run without and with one console stream open"
    for round in $(seq 1 "$CONSOLE_ROUNDS"); do
        for mode in closed open; do
            port="$(free_port)"; pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI=)"
            extra=(); [ "$mode" = closed ] || extra=(--console)
            bench "console-$mode-$round" "https://127.0.0.1:$port" "$pid" --users 1000 --conns 1000 \
                --concurrency "$CONCURRENCY" --webhooks "$RATE_WEBHOOKS" --rate 2000 "${extra[@]}"
            stop "$pid"
        done
    done
fi
# Recovery (contract §13): every daemon of these runs has a key and a Telnyx
# API at a loopback port; with --recovery the load generator serves the
# delivery log there, otherwise nothing listens (and the daemon's run at
# startup, before the load generator, fails to connect: runs are asked for
# with POST /api/recover, the next scheduled one is a day away).
TELNYX_KEY=bench-telnyx-key-0123456789
recovery_runs() { # label-prefix backlog mongodb-uri bench-args...
    local prefix="$1" backlog="$2" uri="$3"; shift 3
    for round in $(seq 1 "$RECOVERY_ROUNDS"); do
        for mode in without with; do
            port="$(free_port)"; tport="$(free_port)"
            # A database of its own (ignored on the embedded store).
            pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI="$uri" CALLBRIDGE_MONGODB_DB="bench-recovery-$round-$mode" \
                CALLBRIDGE_TELNYX_API_KEY="$TELNYX_KEY" CALLBRIDGE_TELNYX_API_URL="http://127.0.0.1:$tport/v2" \
                CALLBRIDGE_RECOVERY_INTERVAL=24h)"
            extra=(); [ "$mode" = without ] || extra=(--recovery "$backlog" --telnyx-port "$tport" --telnyx-key "$TELNYX_KEY")
            bench "$prefix-$mode-$round" "https://127.0.0.1:$port" "$pid" "$@" "${extra[@]}"
            stop "$pid"
        done
    done
}
if want recovery; then
    echo; echo "== recovery: the fixed-rate run without and with $RECOVERY_BACKLOG failed deliveries recovered during it"
    recovery_runs recovery "$RECOVERY_BACKLOG" "" --users 1000 --conns 1000 \
        --concurrency "$CONCURRENCY" --webhooks "$RATE_WEBHOOKS" --rate 2000
fi
if want mongodb-recovery; then
    echo; echo "== mongodb-recovery: MongoDB at $MONGO_RECOVERY_RATE webhooks/s without and with $MONGO_RECOVERY_BACKLOG failed deliveries recovered"
    recovery_runs mongodb-recovery "$MONGO_RECOVERY_BACKLOG" "$MONGO" --users "$USERS" --conns "$CONNS" \
        --concurrency 2 --webhooks "$MONGO_RECOVERY_WEBHOOKS" --rate "$MONGO_RECOVERY_RATE"
fi
if want actions; then
    echo; echo "== actions: $ACTIONS_COUNT call actions through the daemon to a Telnyx API stand-in"
    for window in $ACTIONS_WINDOWS; do
        port="$(free_port)"; tport="$(free_port)"
        # The client sends far more than a dialer's 300 messages a minute;
        # the daemon runs no recovery (the stand-in holds no log).
        pid="$(start_daemon "$port" CALLBRIDGE_MONGODB_URI= "${MSG_ENV[@]}" \
            CALLBRIDGE_TELNYX_API_KEY="$TELNYX_KEY" CALLBRIDGE_TELNYX_API_URL="http://127.0.0.1:$tport/v2" \
            CALLBRIDGE_RECOVERY=off)"
        bench "actions-$window-in-flight" "https://127.0.0.1:$port" "$pid" --users 1 --conns 1 \
            --actions "$ACTIONS_COUNT" --action-window "$window" --telnyx-port "$tport" --telnyx-key "$TELNYX_KEY"
        stop "$pid"
    done
fi
if want connect; then
    echo; echo "== connect: $CONNECTS connects with HS256 tokens and with JWKS RS256 tokens, $CONNECT_CONCURRENCY at a time"
    per_connect() { sed -n 's/.*daemon CPU: [0-9]* ms = \([0-9]*\) us per connect.*/\1/p' "$1"; }
    for round in $(seq 1 "$CONNECT_ROUNDS"); do
        for token in hs256 jwks-rs256; do
            port="$(free_port)"; jport="$(free_port)"
            # Both daemons have the JWKS URL and the dev secret: only the
            # token differs. The load generator serves the JWKS, then
            # waits for /ready (the daemon's first fetch is retried after
            # 1 s, 2 s, ...).
            pid="$(PROBE=health start_daemon "$port" CALLBRIDGE_MONGODB_URI= \
                CALLBRIDGE_JWT_JWKS_URL="http://127.0.0.1:$jport/.well-known/jwks.json")"
            echo "   (load average $(cut -d" " -f1-3 /proc/loadavg) before connect-$token-$round)"
            bench "connect-$token-$round" "https://127.0.0.1:$port" "$pid" --users "$USERS" \
                --connects "$CONNECTS" --token "$token" --connect-concurrency "$CONNECT_CONCURRENCY" \
                --jwks-port "$jport" | tee "$DATA/connect-$token-$round"
            stop "$pid"
        done
        hs="$(per_connect "$DATA/connect-hs256-$round")"; rs="$(per_connect "$DATA/connect-jwks-rs256-$round")"
        echo "   round $round: daemon CPU per connect, JWKS RS256 - HS256 = $rs - $hs = $((rs - hs)) us"
    done
fi
