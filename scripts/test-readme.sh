#!/usr/bin/env bash
# The README as a test (contract §12): the commands of README.md's "Set up"
# and "Quick tour" sections, read from the README's fenced `sh` blocks at
# run time (there is no second copy of them here), run as written on what
# looks like a fresh clone:
#   - a temporary copy of the tracked files (working-tree contents, so a
#     local README edit is what runs), no `callbridge-dev/` data dir, no
#     CALLBRIDGE_* variables, `target` a symlink to this repo's target dir
#     (the release build is shared with scripts/test-js.sh);
#   - the set-up command (`cargo run --release -- serve --dev`) in the
#     background; `/health` and every `# open URL` of the blocks must answer
#     (curl --cacert callbridge-dev/ca.pem); port 8443 must be free;
#   - each tour command in order: `listen` in the background, its output
#     kept; `simulate` (exit 0, `HTTP 200`); a `listen --send-to/--call`
#     with the block's following lines fed on stdin (what the user types);
#     the other commands (token, keygen, check-config) with their output
#     checked;
#   - then what the README says they print: `connected`, `snapshot` and one
#     event per `simulate`, `sent`, the message in both listeners, and every
#     JSON example of the tour (```json blocks and inline `{"event":…}`
#     spans; `…` matches anything) printed by a listener;
#   - finally SIGTERM to the daemon, which must exit 0.
# The one substitution: `<printed token>` is replaced by the token of the
# `callbridge listen … --token …` line the daemon's dev banner printed.
# A README command this script has no check for fails it: teach it here.
# Everything started is stopped on exit, and the copy removed.
# Run by scripts/test.sh; alone: scripts/test-readme.sh.
# BUILD_TIMEOUT_SECS (default 1800): how long the first `cargo run` may
# take to build before the daemon must answer.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
readme=$repo/README.md
port=8443
base=https://127.0.0.1:$port
build_timeout=${BUILD_TIMEOUT_SECS:-1800}

fail() {
    echo "test-readme: FAILED: $*" >&2
    exit 1
}
# What the README says at line $1, for messages.
at() { echo "README.md:$1: ${texts[$1]}"; }

# --- the README's commands ------------------------------------------------
# One record per line of the "Set up" and "Quick tour" sections' fenced
# blocks and per inline `{"event":…}` span of their prose:
#   kind<TAB>block<TAB>line<TAB>text
# kind: sh (a command; `\` continuations joined), open (a `# open URL`
# comment), json (a line of a json block), span (an inline JSON example).
parse_readme() {
    awk '
        /^## / { in_sec = ($0 == "## Set up" || $0 == "## Quick tour"); fence = ""; next }
        !in_sec { next }
        fence == "" && /^```/ { fence = substr($0, 4); block++; next }
        fence != "" && /^```$/ { fence = ""; next }
        fence == "" {
            s = $0
            while (match(s, /`\{"event":[^`]*`/)) {
                printf "span\t0\t%d\t%s\n", NR, substr(s, RSTART + 1, RLENGTH - 2)
                s = substr(s, RSTART + RLENGTH)
            }
            next
        }
        fence == "json" { printf "json\t%d\t%d\t%s\n", block, NR, $0; next }
        fence != "sh" { next }
        {
            line = $0
            if (cont != "") { sub(/^[ \t]+/, " ", line); cmd = cont line }
            else { cmd = line; start = NR }
            if (cmd ~ /\\$/) { cont = substr(cmd, 1, length(cmd) - 1); sub(/[ \t]+$/, "", cont); next }
            cont = ""
            sub(/[ \t]+#[^'"'"'"]*$/, "", cmd)   # a trailing comment
            if (cmd ~ /^[ \t]*# open /) { sub(/^[ \t]*# open /, "", cmd); printf "open\t%d\t%d\t%s\n", block, start, cmd }
            else if (cmd !~ /^[ \t]*(#|$)/) printf "sh\t%d\t%d\t%s\n", block, start, cmd
        }
    ' "$readme"
}

declare -a kinds=() blocks=() lines=() texts=()
while IFS=$'\t' read -r kind block line text; do
    kinds+=("$kind") blocks+=("$block") lines+=("$line")
    texts[line]=$text
done < <(parse_readme)
[ "${#kinds[@]}" -gt 0 ] || fail "no \`\`\`sh blocks found under \"## Set up\" / \"## Quick tour\" in README.md"

# --- a fresh clone ----------------------------------------------------------
clone=$(mktemp -d -t callbridge-readme.XXXXXX)
daemon_pid=""
declare -a listener_pids=()
cleanup() {
    local pid
    for pid in "${listener_pids[@]}" $daemon_pid; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${listener_pids[@]}" $daemon_pid; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$clone"
}
trap cleanup EXIT

git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$clone"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$target_dir"
ln -s "$target_dir" "$clone/target"
out=$clone/.readme-test
mkdir "$out"
for v in $(compgen -e); do
    case "$v" in CALLBRIDGE_*) unset "$v" ;; esac
done
cd "$clone"

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is taken (the README's daemon listens there): stop whatever listens on 127.0.0.1:$port and run again"
fi

# --- the checks ---------------------------------------------------------------
# Each README command runs as `exec <its text>` in a subshell, so the pid we
# hold is the command's own (cargo run execs the daemon).

token=""
serve_line=""
start_daemon() { # README line
    local n=$1 waited=0
    echo "== README.md:$n (daemon, background): ${texts[n]}"
    (eval "exec ${texts[n]}") >"$out/daemon.out" 2>"$out/daemon.err" &
    daemon_pid=$!
    serve_line=$n
    until grep -qs '^  [^ ]*callbridge listen .* --token ' "$out/daemon.out"; do
        if ! kill -0 "$daemon_pid" 2>/dev/null; then
            cat "$out/daemon.out" "$out/daemon.err" >&2
            fail "$(at "$n") exited before printing its dev banner (output above)"
        fi
        [ "$waited" -lt "$build_timeout" ] ||
            fail "$(at "$n") printed no dev banner within ${build_timeout}s"
        sleep 1
        waited=$((waited + 1))
    done
    token=$(sed -n 's/^  [^ ]*callbridge listen .* --token \([^ ]*\)$/\1/p' "$out/daemon.out")
    [ -n "$token" ] || fail "$(at "$n"): no token in the banner's listen line"
    local exe
    exe=$(readlink "/proc/$daemon_pid/exe" || true)
    [[ $exe == */target/release/callbridge ]] ||
        fail "$(at "$n"): pid $daemon_pid is $exe, not target/release/callbridge"
    grep -q 'Compiling callbridge' "$out/daemon.err" &&
        echo "   (cargo run compiled callbridge; a later release build of the same binary reuses it)"
    for _ in $(seq 1 50); do
        curl -fsS --max-time 2 --cacert callbridge-dev/ca.pem "$base/health" >/dev/null 2>&1 && break
        sleep 0.2
    done
    curl -fsS --max-time 5 --cacert callbridge-dev/ca.pem "$base/health" >/dev/null ||
        fail "$(at "$n"): $base/health does not answer (curl --cacert callbridge-dev/ca.pem)"
    echo "   banner printed, $base/health answers"
}

check_open() { # README line
    local n=$1 url=${texts[$1]}
    echo "== README.md:$n (open): $url"
    curl -fsS --max-time 5 --cacert callbridge-dev/ca.pem "$url" >"$out/open.html" ||
        fail "$(at "$n"): $url does not answer 200 (curl --cacert callbridge-dev/ca.pem)"
    grep -qi '<html' "$out/open.html" || fail "$(at "$n"): $url is not an HTML page"
}

# The README's command with the one substitution.
with_token() {
    local cmd=${texts[$1]}
    echo "${cmd//"<printed token>"/"$token"}"
}

# The banner's `callbridge listen …` line and the README's must agree
# (the README says to use the line the daemon printed), but for the binary's
# path and a leading `./` of a path (the banner prints ./callbridge-dev/…).
check_like_banner() { # README line
    local n=$1 printed readme_args
    printed=$(sed -n 's/^  [^ ]*callbridge listen /listen /p' "$out/daemon.out")
    read -r -a readme_args <<<"$(with_token "$n")"
    readme_args=("${readme_args[@]:1}")
    local want i
    read -r -a want <<<"$printed"
    for i in "${!want[@]}"; do
        [ "${readme_args[i]#./}" = "${want[i]#./}" ] ||
            fail "$(at "$n"): differs from the banner's line \`callbridge $printed\` at \`${want[i]}\`"
    done
}

declare -a listener_outs=()
start_listener() { # README line, stdin file
    local n=$1 input=$2 k=${#listener_outs[@]}
    echo "== README.md:$n (listener $((k + 1)), background${input:+, typed lines on stdin}): ${texts[n]}"
    check_like_banner "$n"
    local cmd
    cmd=$(with_token "$n")
    (eval "exec $cmd") <"${input:-/dev/null}" >"$out/listen$k.out" 2>"$out/listen$k.err" &
    listener_pids+=($!)
    listener_outs+=("$out/listen$k.out")
    wait_for "$n" "$k" '"event":"snapshot"'
}

# A `listen … --action A --call ID`: the action's result, then the webhook
# the dev daemon's Telnyx stand-in posts for it reaches the first listener.
start_action_listener() { # README line
    local n=$1 k=${#listener_outs[@]} call action
    start_listener "$n" ""
    wait_for "$n" "$k" '"event":"call-action-result"'
    grep -qF '"result":{"result":"ok"}' "${listener_outs[k]}" ||
        fail "$(at "$n"): the action did not succeed: $(grep -F call-action-result "${listener_outs[k]}")"
    action=$(sed -n 's/.* --action \([^ ]*\).*/\1/p' <<<"${texts[n]}")
    call=$(sed -n 's/.* --call \([^ ]*\).*/\1/p' <<<"${texts[n]}")
    if [ "$action" = answer ]; then
        wait_for "$n" 0 "\"event\":\"call-answered\",\"data\":{\"callControlId\":\"$call\""
        echo "   answered through the stand-in; listener 1 got $call's call-answered"
    fi
}

# Wait until listener $2 printed a line containing $3 (5 s).
wait_for() { # README line, listener index, fixed string
    local n=$1 k=$2 what=$3
    for _ in $(seq 1 50); do
        grep -qF -- "$what" "${listener_outs[k]}" && return 0
        if ! kill -0 "${listener_pids[k]}" 2>/dev/null; then
            cat "${listener_outs[k]}" "$out/listen$k.err" >&2
            fail "$(at "$n") exited without printing $what (output above)"
        fi
        sleep 0.1
    done
    cat "${listener_outs[k]}" "$out/listen$k.err" >&2
    fail "$(at "$n") did not print $what within 5 s (output above)"
}

declare -a simulated=()
run_simulate() { # README line
    local n=$1 rc=0
    echo "== README.md:$n: ${texts[n]}"
    (eval "exec ${texts[n]}") >"$out/simulate.out" 2>&1 || rc=$?
    [ "$rc" = 0 ] || { cat "$out/simulate.out" >&2; fail "$(at "$n") exited $rc (output above)"; }
    head -n1 "$out/simulate.out" | grep -qx 'HTTP 200' ||
        { cat "$out/simulate.out" >&2; fail "$(at "$n") did not print HTTP 200 (output above)"; }
    # The tour's call.* types are normalized by replacing dots: call-hangup.
    local type
    type=$(sed -n 's/.* simulate \([^ ]*\).*/\1/p' <<<"${texts[n]}")
    simulated+=("${type//./-}:$n")
}

run_other() { # README line
    local n=$1 cmd=${texts[$1]} rc=0
    echo "== README.md:$n: $cmd"
    (eval "exec $cmd") >"$out/cmd.out" 2>"$out/cmd.err" || rc=$?
    case "$cmd" in
        *"callbridge token --user "*)
            [ "$rc" = 0 ] || fail "$(at "$n") exited $rc: $(cat "$out/cmd.err")"
            local user payload
            user=$(sed -n 's/.* --user \([^ ]*\).*/\1/p' <<<"$cmd")
            payload=$(cut -d. -f2 "$out/cmd.out" | tr '_-' '/+')
            while [ $(( ${#payload} % 4 )) != 0 ]; do payload+="="; done
            base64 -d <<<"$payload" 2>/dev/null | grep -qF "\"sub\":\"$user\"" ||
                fail "$(at "$n") did not print a JWT for $user: $(cat "$out/cmd.out")"
            ;;
        *"callbridge keygen")
            [ "$rc" = 0 ] || fail "$(at "$n") exited $rc: $(cat "$out/cmd.err")"
            { grep -q '^public_key=.' "$out/cmd.out" && grep -q '^private_key_pkcs8=.' "$out/cmd.out"; } ||
                fail "$(at "$n") did not print public_key= and private_key_pkcs8=: $(cat "$out/cmd.out")"
            ;;
        *"callbridge check-config --dev")
            [ "$rc" = 0 ] || fail "$(at "$n") exited $rc: $(cat "$out/cmd.out" "$out/cmd.err")"
            grep -q '^ok: TLS certificate and key match' "$out/cmd.out" ||
                fail "$(at "$n") did not check the certificate: $(cat "$out/cmd.out")"
            # Without --dev the README promises exit 2 for an invalid
            # configuration: a fresh clone has none.
            rc=0
            (eval "exec ${cmd% --dev}") >"$out/cmd.out" 2>"$out/cmd.err" || rc=$?
            { [ "$rc" = 2 ] && grep -q 'CALLBRIDGE_' "$out/cmd.err"; } ||
                fail "$(at "$n"): without --dev it should exit 2 naming a variable, exited $rc: $(cat "$out/cmd.err")"
            ;;
        *) fail "$(at "$n"): scripts/test-readme.sh has no check for this command; add one" ;;
    esac
}

# `…` in a README example matches anything; the rest must be verbatim.
like_example() { # printed line, example
    local line=$1 ex=$2 frag
    frag=${ex%%…*}
    [[ $line == "$frag"* ]] || return 1
    [[ $ex == *…* ]] || [[ $line == "$ex" ]] || return 1
    line=${line#"$frag"}
    ex=${ex#"$frag"}
    while [[ $ex == …* ]]; do
        ex=${ex#…}
        frag=${ex%%…*}
        if [[ $ex != *…* ]]; then
            [[ $line == *"$frag" ]]
            return
        fi
        [[ $line == *"$frag"* ]] || return 1
        line=${line#*"$frag"}
        ex=${ex#"$frag"}
    done
    return 0
}

# --- run them, in README order -------------------------------------------------
n_sh=0
typed=""          # a send-listen's README line, while its typed lines follow
declare -a typed_lines=()
finish_typed() {
    [ -n "$typed" ] || return 0
    printf '%s\n' "${typed_lines[@]}" >"$out/typed.txt"
    start_listener "$typed" "$out/typed.txt"
    local k=$(( ${#listener_outs[@]} - 1 ))
    wait_for "$typed" "$k" '"event":"sent"'
    local line i
    for line in "${typed_lines[@]}"; do
        for i in "${!listener_outs[@]}"; do
            wait_for "$typed" "$i" "\"payload\":\"$line\""
        done
    done
    echo "   sent, and the message reached all ${#listener_outs[@]} listeners"
    typed=""
    typed_lines=()
}

prev_block=""
for i in "${!kinds[@]}"; do
    n=${lines[i]}
    text=${texts[n]}
    if [ "${blocks[i]}" != "$prev_block" ]; then finish_typed; fi
    prev_block=${blocks[i]}
    case "${kinds[i]}" in
        json | span) continue ;;
        open) check_open "$n"; continue ;;
    esac
    n_sh=$((n_sh + 1))
    if [ -n "$typed" ]; then
        typed_lines+=("$text")
        continue
    fi
    case "$text" in
        "scripts/test.sh")
            echo "== README.md:$n: $text (the suite this check is part of: not run here)" ;;
        "cargo run --release -- serve --dev")
            if [ -z "$daemon_pid" ]; then
                start_daemon "$n"
            else
                echo "== README.md:$n: $text (the daemon of README.md:$serve_line, running)"
            fi ;;
        *"callbridge listen "*"--action "*)
            [ -n "$token" ] || fail "$(at "$n"): runs before the daemon was started"
            start_action_listener "$n" ;;
        *"callbridge listen "*"--send-to "* | *"callbridge listen "*"--call "*)
            [ -n "$token" ] || fail "$(at "$n"): runs before the daemon was started"
            typed=$n ;;
        *"callbridge listen "*)
            [ -n "$token" ] || fail "$(at "$n"): runs before the daemon was started"
            start_listener "$n" "" ;;
        *"callbridge simulate "*)
            [ -n "$daemon_pid" ] || fail "$(at "$n"): runs before the daemon was started"
            run_simulate "$n" ;;
        *) run_other "$n" ;;
    esac
done
finish_typed
[ -n "$daemon_pid" ] || fail "README.md: no \`cargo run --release -- serve --dev\` in Set up / Quick tour"
[ "${#listener_outs[@]}" -gt 0 ] || fail "README.md: the Quick tour has no \`listen\` command"

# --- what the README says they printed -------------------------------------------
echo "== the listeners' output, as the README describes it"
first=${listener_outs[0]}
if [ "${#simulated[@]}" -gt 0 ]; then
    last=${simulated[-1]}
    wait_for "${last#*:}" 0 "\"event\":\"${last%%:*}\""
fi
# Messages and action results between the calls' events are the tour's
# other steps: left out of the order check.
mapfile -t events < <(sed -n 's/^{"event":"\([^"]*\)".*/\1/p' "$first" | grep -vx 'message\|sent\|call-action-result')
want=(connected snapshot)
for s in "${simulated[@]}"; do want+=("${s%%:*}"); done
[ "${events[*]:0:${#want[@]}}" = "${want[*]}" ] ||
    fail "the first listener printed events \`${events[*]}\`, the README says \`${want[*]}\` (README.md:${lines[0]}…)"
echo "   listener 1 printed: ${events[*]}"
for i in "${!kinds[@]}"; do
    [ "${kinds[i]}" = json ] || [ "${kinds[i]}" = span ] || continue
    n=${lines[i]}
    found=""
    for f in "${listener_outs[@]}"; do
        while IFS= read -r printed; do
            if like_example "$printed" "${texts[n]}"; then found=1; break 2; fi
        done <"$f"
    done
    [ -n "$found" ] || { cat "${listener_outs[@]}" >&2; fail "$(at "$n"): no listener printed a line like this example (their output above)"; }
    echo "   README.md:$n example matches a printed line"
done

# --- graceful shutdown --------------------------------------------------------
echo "== SIGTERM to the daemon of README.md:$serve_line: exit 0 expected"
for pid in "${listener_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
listener_pids=()
kill -TERM "$daemon_pid"
for _ in $(seq 1 300); do
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$daemon_pid" 2>/dev/null && fail "$(at "$serve_line"): still running 30 s after SIGTERM"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=""
[ "$rc" = 0 ] || { cat "$out/daemon.err" >&2; fail "$(at "$serve_line"): exited $rc after SIGTERM, not 0 (log above)"; }
echo "test-readme: OK ($n_sh README lines run)"
