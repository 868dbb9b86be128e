#!/usr/bin/env bash
# The cost of schema validation on appends (issue 14): on one fresh release
# server per store, ROUNDS times alternately, `cairn-bench` appends EVENTS
# single-event requests from 64 clients with no schema for their type, then
# with a schema registered for it (`{"n": integer}`, which every event
# matches), then removes it. Prints each run's events/s and with/without.
#
# Usage: bench/schemas.sh [STORE] [ROUNDS] [EVENTS]
#   STORE: sqlite, postgres or both (default both); defaults 3 20000.
# Needs: cargo, curl, jq, createdb/dropdb on PGHOST:PGPORT as PGUSER
# (127.0.0.1, 5432, postgres; trust auth). CAIRN_BIN / CAIRN_BENCH: measure
# these binaries instead of building the checkout.
set -euo pipefail

cd "$(dirname "$0")/.."
store=${1:-both}
rounds=${2:-3}
events=${3:-20000}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
if [ -z "${CAIRN_BIN:-}" ] || [ -z "${CAIRN_BENCH:-}" ]; then
    cargo build --release --quiet --bin cairn --bin cairn-bench
    CAIRN_BIN=${CAIRN_BIN:-${CARGO_TARGET_DIR:-target}/release/cairn}
    CAIRN_BENCH=${CAIRN_BENCH:-${CARGO_TARGET_DIR:-target}/release/cairn-bench}
fi

work=$(mktemp -d)
server= db=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    [ -n "$db" ] && dropdb --if-exists "$db" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

schema='{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 0}}}'

# append: events/s of one cairn-bench append run at 64 clients.
append() {
    "$CAIRN_BENCH" --url "$CAIRN_URL" --events "$events" --clients 64 --json 2>/dev/null |
        jq -r '.append.events_per_sec'
}

measure() {
    local kind=$1 port=$((20000 + RANDOM % 20000)) url
    if [ "$kind" = postgres ]; then
        db="cairn_schemas_$(date +%s%N)"
        createdb "$db"
        url="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
    else
        url="sqlite://$work/$kind-$port.db"
    fi
    "$CAIRN_BIN" serve --listen "127.0.0.1:$port" --database-url "$url" >"$work/server.log" 2>&1 &
    server=$!
    export CAIRN_URL="http://127.0.0.1:$port"
    for _ in $(seq 100); do curl -fs "$CAIRN_URL/health" >/dev/null && break; sleep 0.1; done
    echo "== $kind: $rounds rounds of $events appends from 64 clients"
    for round in $(seq "$rounds"); do
        local without with
        without=$(append)
        curl -fsS -X PUT "$CAIRN_URL/schemas/Benched" -H 'Content-Type: application/json' \
            -d "$schema" >/dev/null
        with=$(append)
        curl -fsS -X DELETE "$CAIRN_URL/schemas/Benched" >/dev/null
        awk -v a="$without" -v b="$with" -v r="$round" 'BEGIN {
            printf "round %d: no schema %.0f events/s, schema %.0f events/s, with/without %.2f\n",
                r, a, b, b / a }'
    done
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
    [ -n "$db" ] && dropdb --if-exists "$db"
    db=
}

case "$store" in
    both) measure sqlite; measure postgres ;;
    sqlite | postgres) measure "$store" ;;
    *) echo "STORE is sqlite, postgres or both" >&2; exit 2 ;;
esac
