#!/usr/bin/env bash
# Store growth: runs `cairn-bench --scenario growth` (appends measured as the
# store grows, then an HTTP catch-up read of the bulk-loaded category) and
# times the database reading the same rows by itself, for comparison.
#
# Usage: bench/growth.sh [cairn-bench growth options ...]
#   e.g. bench/growth.sh --target-events 10000000 --step 1000000
#   The options go to cairn-bench as they are (it gets `--scenario growth
#   --json` from the script).
# Environment:
#   CAIRN_URL  a running server: start nothing and load it. The database-side
#              read then uses DATABASE_URL (STORE=postgres) or
#              CAIRN_DATA_DIR/cairn.db (STORE=sqlite) when set, else is skipped.
#   STORE      postgres (default): a fresh database made with createdb on
#              PGHOST:PGPORT as PGUSER (127.0.0.1, 5432, postgres; trust auth),
#              dropped on exit. sqlite: the embedded store in a temporary
#              CAIRN_DATA_DIR, removed on exit.
#   PROFILE    the cargo profile to build and run (default release).
# Without CAIRN_URL it builds (cargo build), starts `cairn serve` on a free
# port of 127.0.0.1, waits for /health, and kills the server on exit (also on
# error or Ctrl-C). The database-side read is `psql -c "\copy (SELECT …) TO
# '/dev/null'"` for Postgres and `sqlite3` (if installed) for SQLite.
set -euo pipefail

cd "$(dirname "$0")/.."
store=${STORE:-postgres}
profile=${PROFILE:-release}
case "$store" in
    postgres | sqlite) ;;
    *) echo "STORE must be postgres or sqlite, not $store" >&2; exit 2 ;;
esac
case "$profile" in
    release) bindir=${CARGO_TARGET_DIR:-target}/release ;;
    dev | debug) profile=dev; bindir=${CARGO_TARGET_DIR:-target}/debug ;;
    *) echo "PROFILE must be release or dev, not $profile" >&2; exit 2 ;;
esac
export PGHOST=${PGHOST:-127.0.0.1}
export PGPORT=${PGPORT:-5432}
export PGUSER=${PGUSER:-postgres}

# The Postgres client tools, from PATH or else /usr/lib/postgresql/*/bin.
pgbin=
if [ "$store" = postgres ] && ! command -v psql >/dev/null 2>&1; then
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/psql" ]; then pgbin=$dir/; fi
    done
    [ -n "$pgbin" ] || { echo "psql not found" >&2; exit 1; }
fi

workdir=$(mktemp -d)
server_pid=
db=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ -n "$db" ]; then
        "${pgbin}dropdb" --if-exists "$db" || echo "could not drop database $db" >&2
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${CAIRN_URL:-}" ]; then
    url=$CAIRN_URL
    cargo build --profile "$profile" --bin cairn-bench
    database_url=${DATABASE_URL:-}
    data_dir=${CAIRN_DATA_DIR:-}
else
    cargo build --profile "$profile"
    # A free port: one that nothing answers on.
    port=$((20000 + RANDOM % 20000))
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((20000 + RANDOM % 20000))
    done
    url=http://127.0.0.1:$port
    if [ "$store" = postgres ]; then
        name=cairn_growth_$$_$RANDOM
        "${pgbin}createdb" "$name"
        db=$name
        database_url=postgres://$PGUSER@$PGHOST:$PGPORT/$db
        data_dir=
        DATABASE_URL=$database_url "$bindir/cairn" serve --listen "127.0.0.1:$port" >"$workdir/server.log" 2>&1 &
    else
        database_url=
        data_dir=$workdir/data
        env -u DATABASE_URL CAIRN_DATA_DIR="$data_dir" \
            "$bindir/cairn" serve --listen "127.0.0.1:$port" >"$workdir/server.log" 2>&1 &
    fi
    server_pid=$!
    for _ in $(seq 1 300); do
        curl -fsS "$url/health" >/dev/null 2>&1 && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$workdir/server.log" >&2; exit 1; }
        sleep 0.1
    done
    curl -fsS "$url/health" >/dev/null || { echo "no /health at $url" >&2; exit 1; }
    echo "cairn ($store store) serving at $url, pid $server_pid" >&2
fi

"$bindir/cairn-bench" --url "$url" --scenario growth --json "$@" >"$workdir/summary.json" || {
    [ -f "$workdir/server.log" ] && tail -n 20 "$workdir/server.log" >&2
    exit 1
}
summary=$(cat "$workdir/summary.json")
echo "$summary"

# The bulk category and the HTTP read from the summary (flat JSON, no jq needed).
category=$(sed -n 's/.*"category":"\([^"]*\)".*/\1/p' <<<"$summary")
read_part=$(sed -n 's/.*"read":{\([^}]*\)}.*/\1/p' <<<"$summary")
http_events=$(sed -n 's/.*"events":\([0-9]*\).*/\1/p' <<<"$read_part")
http_rate=$(sed -n 's/.*"events_per_sec":\([0-9.e+-]*\).*/\1/p' <<<"$read_part")
[[ "$category" =~ ^growthbulk[0-9a-f]+$ ]] || { echo "no bulk category in the summary" >&2; exit 1; }

columns="global_position, id, stream, position, type, data, metadata, causation_id, correlation_id, time"
query="SELECT $columns FROM events WHERE category = '$category' ORDER BY global_position"
now_ns() { date +%s%N; }
db_label=
db_events=
if [ "$store" = postgres ] && [[ "$database_url" == postgres* ]]; then
    started=$(now_ns)
    out=$("${pgbin}psql" -X -v ON_ERROR_STOP=1 -d "$database_url" -c "\\copy ($query) TO '/dev/null'")
    ended=$(now_ns)
    db_label='psql \copy'
    db_events=$(sed -n 's/^COPY \([0-9]*\)$/\1/p' <<<"$out")
elif [ "$store" = sqlite ] && [ -n "$data_dir" ] && [ -f "$data_dir/cairn.db" ]; then
    if command -v sqlite3 >/dev/null 2>&1; then
        started=$(now_ns)
        sqlite3 -batch -bail "$data_dir/cairn.db" "$query" >/dev/null
        ended=$(now_ns)
        db_label=sqlite3
        db_events=$(sqlite3 -batch "$data_dir/cairn.db" "SELECT count(*) FROM events WHERE category = '$category'")
    else
        echo "sqlite3 not found: database-side read skipped" >&2
    fi
else
    echo "no database to read directly ($store store): database-side read skipped" >&2
fi

echo
echo "catch-up read of category $category:"
printf '  %-12s %10s events %14.0f events/s\n' "HTTP pages" "$http_events" "$http_rate"
if [ -n "$db_label" ]; then
    seconds=$(awk -v ns="$((ended - started))" 'BEGIN { printf "%.3f", ns / 1e9 }')
    db_rate=$(awk -v n="$db_events" -v s="$seconds" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
    printf '  %-12s %10s events %14s events/s (%s s)\n' "$db_label" "$db_events" "$db_rate" "$seconds"
fi
