#!/usr/bin/env bash
# Managed subscriptions against a plain category read (the speed goal: with 8
# consumers claiming batches of 100, a subscription delivers and acknowledges
# at least 50% of the events/s that a plain category read pages through in the
# same run). Each round starts a fresh release server on a fresh store and runs
# `cairn-bench --scenario subscription`: it appends EVENTS events to a new
# category spread over 1000 streams, times one sequential reader paging
# through the category 100 events a page, then times 8 consumers claiming
# (max 100) and acknowledging every event of it, first through a subscription
# with "ordering": "stream", then through one with "ordering": "none".
# Prints, per round, the three events/s figures and each subscription / read.
#
# Usage: bench/subscriptions.sh [EVENTS] [ROUNDS] [STORE]   (defaults 100000 3 postgres)
#   STORE: postgres, sqlite, or both (each round then runs on both stores).
# Needs: cargo; for postgres, createdb/dropdb on PGHOST:PGPORT as PGUSER
# (127.0.0.1, 5432, postgres; trust auth). sqlite uses a fresh --data-dir.
# CAIRN_BIN (and CAIRN_BENCH_BIN): measure these binaries instead of building
# the checkout (CAIRN_BENCH_BIN defaults to cairn-bench beside CAIRN_BIN).
# CONSUMERS (default 8) and BATCH (default 100) change the consumers and the
# claim / page size.
set -euo pipefail

cd "$(dirname "$0")/.."
events=${1:-100000}
rounds=${2:-3}
store=${3:-postgres}
consumers=${CONSUMERS:-8}
batch=${BATCH:-100}
case "$store" in
    postgres) stores=postgres ;;
    sqlite) stores=sqlite ;;
    both) stores="postgres sqlite" ;;
    *) echo "STORE must be postgres, sqlite or both, not $store" >&2; exit 2 ;;
esac
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
if [ -z "${CAIRN_BIN:-}" ]; then
    cargo build --release --quiet --bin cairn --bin cairn-bench
    CAIRN_BIN=${CARGO_TARGET_DIR:-target}/release/cairn
fi
CAIRN_BENCH_BIN=${CAIRN_BENCH_BIN:-$(dirname "$CAIRN_BIN")/cairn-bench}

work=$(mktemp -d)
server=
db=
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    if [ -n "$db" ]; then dropdb --if-exists "$db" || echo "could not drop database $db" >&2; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run STORE: one measured run on a fresh server and store; prints the
# scenario's key=value lines (its other lines go to $work/bench.log).
run() {
    local store=$1 port
    # Below the kernel's ephemeral ports, and one that nothing answers on.
    port=$((20000 + RANDOM % 12000))
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((20000 + RANDOM % 12000))
    done
    if [ "$store" = postgres ]; then
        db="cairn_subs_$(date +%s%N)"
        createdb "$db"
        env -u CAIRN_DATA_DIR "$CAIRN_BIN" serve --listen "127.0.0.1:$port" \
            --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$db" >"$work/server.log" 2>&1 &
    else
        rm -rf "$work/data"
        env -u DATABASE_URL "$CAIRN_BIN" serve --listen "127.0.0.1:$port" \
            --data-dir "$work/data" >"$work/server.log" 2>&1 &
    fi
    server=$!
    local up=
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/health" >/dev/null && { up=1; break; }
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$up" ]; then
        echo "$store: the server did not come up:" >&2
        tail -n 50 "$work/server.log" >&2
        exit 1
    fi
    local status=0
    "$CAIRN_BENCH_BIN" --url "http://127.0.0.1:$port" --scenario subscription --events "$events" \
        --clients "$consumers" --page-size "$batch" >"$work/bench.log" 2>&1 || status=$?
    kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; server=
    if [ -n "$db" ]; then dropdb "$db"; db=; fi
    if [ "$status" != 0 ]; then
        echo "$store: cairn-bench failed (exit $status):" >&2
        cat "$work/bench.log" >&2
        echo "--- server log (last 50 lines):" >&2
        tail -n 50 "$work/server.log" >&2
        exit 1
    fi
    grep -vE '^[a-z_]+=' "$work/bench.log" | sed 's/^/  /' >&2
    grep -E '^[a-z_]+=' "$work/bench.log"
}

# value KEY LINES: the value of KEY=… among LINES.
value() { sed -n "s/^$1=//p" <<<"$2"; }

echo "events/s, $events events over 1000 streams, $consumers consumers claiming $batch," \
    "read pages of $batch by one sequential reader; goal: subscription / read >= 0.5"
for round in $(seq "$rounds"); do
    for s in $stores; do
        out=$(run "$s")
        echo "round $round $s: read $(value read_events_per_s "$out")" \
            "stream $(value subscription_stream_events_per_s "$out")" \
            "none $(value subscription_none_events_per_s "$out")" \
            " stream/read $(value stream_to_read "$out") none/read $(value none_to_read "$out")"
    done
done
