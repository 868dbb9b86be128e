#!/usr/bin/env bash
# Conditional appends against plain ones (issue 12's speed goal): wrk at
# CLIENTS connections for SECONDS a run, each run a fresh release server on a
# fresh Postgres database, in ROUNDS alternating rounds of
#   plain        POST /streams/{s}: one event to a new stream, no condition;
#   conditional  POST /events: one tagged event, on condition that no event
#                with its tag exists (a fresh tag per decision: it succeeds).
# Prints appends per second per run and, per round, conditional / plain.
#
# Usage: bench/dcb.sh [SECONDS] [CLIENTS] [ROUNDS]   (defaults 10 64 3)
# Needs: cargo, wrk (installed with apt-get if missing), createdb/dropdb on
# PGHOST:PGPORT as PGUSER (127.0.0.1, 5432, postgres; trust auth).
# CAIRN_BIN: measure this binary instead of building the checkout.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${1:-10}
clients=${2:-64}
rounds=${3:-3}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
if [ -z "${CAIRN_BIN:-}" ]; then
    cargo build --release --quiet --bin cairn
    CAIRN_BIN=${CARGO_TARGET_DIR:-target}/release/cairn
fi

work=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/plain.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Host"] = "localhost"
wrk.body = '{"type":"Decided","data":{"amount":10}}'
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/streams/decision-" .. math.random(1, 2000000000) .. "-" .. n)
end
done = function(summary, latency, requests)
  io.write(string.format("non2xx %d\n", summary.errors.status))
end
LUA
cat >"$work/conditional.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Host"] = "localhost"
-- Each thread names its decisions apart: wrk's threads share one random seed.
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("thread", threads)
end
local n = 0
request = function()
  n = n + 1
  local id = thread .. "-" .. n
  local body = '{"events":[{"stream":"decision-' .. id .. '","type":"Decided","data":{"amount":10},' ..
    '"tags":["decision:' .. id .. '"]}],"condition":{"fail_if_events_match":[{"tags":["decision:' .. id .. '"]}]}}'
  return wrk.format(nil, "/events", nil, body)
end
done = function(summary, latency, requests)
  io.write(string.format("non2xx %d\n", summary.errors.status))
end
LUA

# run MODE: one measured run on a fresh server and database; prints appends/s.
run() {
    local mode=$1
    local db="cairn_dcb_$(date +%s%N)"
    createdb "$db"
    local port=$((20000 + RANDOM % 20000))
    DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db" "$CAIRN_BIN" serve --listen "127.0.0.1:$port" \
        >"$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
    wrk -t2 -c"$clients" -d"${seconds}s" -s "$work/$mode.lua" "http://127.0.0.1:$port" >"$work/wrk.log"
    kill "$server"; wait "$server" 2>/dev/null || true; server=
    dropdb "$db"
    grep -q "^non2xx 0$" "$work/wrk.log" || { echo "$mode: some appends failed" >&2; cat "$work/wrk.log" >&2; exit 1; }
    awk '/Requests\/sec/ {print $2}' "$work/wrk.log"
}

echo "appends/s, $clients clients, $seconds s per run"
for round in $(seq "$rounds"); do
    plain=$(run plain)
    conditional=$(run conditional)
    ratio=$(awk -v a="$conditional" -v b="$plain" 'BEGIN {printf "%.3f", a / b}')
    echo "round $round: plain $plain conditional $conditional  conditional/plain $ratio"
done
