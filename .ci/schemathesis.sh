#!/usr/bin/env bash
# The OpenAPI document against the service's behaviour: schemathesis, every check, against a
# real `appleconnect serve` sandbox on loopback, once with rate limits on (the address's budget
# spent first, so that 429s are answered and checked too) and once off (`serve --no-rate-limits`). Each run gets a free port and a temporary data
# directory, an API key made with `appleconnect apikey create`, and sessions from sign-ins
# through the sandbox's emulator (.ci/sandbox_client.py). The server is stopped whatever the
# outcome; any failure makes the script, and so .ci/run, fail.
#
#     .ci/schemathesis.sh            (after `pip install -e '.[dev]'`)
#
# Bounds: SCHEMATHESIS_MAX_EXAMPLES (default 25) per operation and SCHEMATHESIS_MAX_TIME
# (default 60) seconds of testing per run; each run also takes about half a minute to set up.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=.venv/bin
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
max_time="${SCHEMATHESIS_MAX_TIME:-60}"
server_pid=""
work=""

stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
    if [ -n "$work" ]; then
        rm -rf "$work"
        work=""
    fi
}
trap stop_server EXIT

free_port() {
    "$bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() {
    local url="$1/healthz"
    for _ in $(seq 1 150); do
        if "$bin/python" -c 'import sys, httpx; sys.exit(httpx.get(sys.argv[1], timeout=1).status_code != 200)' "$url" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "appleconnect serve exited:"; cat "$work/serve.log"; return 1
        fi
        sleep 0.2
    done
    echo "appleconnect serve did not answer $url:"; cat "$work/serve.log"; return 1
}

# run_once LABEL FLAG: one schemathesis run against a fresh sandbox started with FLAG.
run_once() {
    local label="$1" flag="$2" port base status=0
    printf '\n--- schemathesis, %s ---\n' "$label"
    work="$(mktemp -d)"
    port="$(free_port)"
    base="http://127.0.0.1:$port"
    "$bin/appleconnect" serve --port "$port" --data-dir "$work/data" "$flag" >"$work/serve.log" 2>&1 &
    server_pid=$!
    wait_ready "$base"
    local key maria li sam
    key="$("$bin/appleconnect" apikey create --name schemathesis --data-dir "$work/data" | grep -o 'ack_[A-Za-z0-9_-]*' | head -n 1)"
    maria="$("$bin/python" .ci/sandbox_client.py session "$base" "$key" maria.ruiz@example.com)"
    li="$("$bin/python" .ci/sandbox_client.py session "$base" "$key" li.wei@example.com)"
    sam="$("$bin/python" .ci/sandbox_client.py session "$base" "$key" sam.okafor@example.com)"
    if [ "$flag" = --rate-limits ]; then
        # Spend this address's budget first: what follows in the window is answered 429.
        "$bin/python" .ci/sandbox_client.py exhaust-ip-limit "$base"
    fi
    # One worker: several threads parsing source at once crash CPython 3.11's ast module.
    API_KEY="$key" SESSION_TOKEN="$maria" LOGOUT_TOKEN="$li" DELETE_TOKEN="$sam" \
        "$bin/schemathesis" --config-file .ci/schemathesis.toml --no-color \
        run "$base/openapi.json" --checks all --workers 1 --seed 1 --request-timeout 30 \
        --max-examples "$max_examples" --max-time "$max_time" || status=$?
    echo "answers of the service (access log: count, method, path, status):"
    sed -nE 's/.*"([A-Z]+) ([^ ?"]*)[^"]*" ([0-9]{3}).*/\1 \2 \3/p' "$work/serve.log" | sort | uniq -c
    if [ "$flag" = --rate-limits ]; then
        # Limited answers were fuzzed too (more than the one that ended the burst).
        if [ "$(grep -cE '" 429' "$work/serve.log")" -lt 2 ]; then
            echo "no request of schemathesis was answered 429"
            status=1
        fi
    else
        # The credentials worked: each operation that needs one answered 200 at least once.
        for operation in "GET /api/apple_request_auth" "GET /api/validate_auth_cookie" \
            "GET /api/get_currentuserinfo" "POST /api/logout" "POST /api/delete_account"; do
            if ! grep -q "\"$operation[ ?][^\"]*\" 200" "$work/serve.log"; then
                echo "no 200 from $operation: the API key or a session was not valid"
                status=1
            fi
        done
    fi
    if grep -q "Traceback" "$work/serve.log"; then
        echo "the service logged a traceback:"; grep -B2 -A30 "Traceback" "$work/serve.log" | head -n 80
        status=1
    fi
    stop_server
    return "$status"
}

# Each run in a process of its own, so that `set -e` stops it at its first failing step and
# the other run still happens.
if [ "${1:-}" = "--one" ]; then
    shift
    run_once "$@"
    exit
fi
result=0
"$0" --one "rate limits on (the sandbox's defaults: 300 per IP, 3000 per key, per minute)" \
    --rate-limits || result=1
"$0" --one "rate limits off" --no-rate-limits || result=1
exit "$result"
