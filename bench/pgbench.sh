#!/usr/bin/env bash
# Baseline for cairn-bench: how many single-row event inserts per second the
# Postgres server itself sustains, with nothing but pgbench in front of it.
#
# Creates a scratch database holding a table shaped like Cairn's events table,
# runs a pgbench custom script that inserts ONE event per transaction (every
# insert starts a new stream at position 0, with a random stream name and a
# gen_random_uuid() id), for each client count, prints tps per client count,
# and drops the database afterwards (also on error or Ctrl-C).
#
# Usage: bench/pgbench.sh [-T seconds] [-j threads] [-d database] [clients ...]
#   defaults: -T 15, -j 2 (capped at the client count), -d cairn_pgbench,
#   clients 1 8 64.
# Connection: PGHOST (default 127.0.0.1), PGPORT (default 5432),
#   PGUSER (default postgres), PGPASSWORD if the server wants one.
# pgbench/psql are taken from PATH, else from /usr/lib/postgresql/*/bin.
set -euo pipefail

duration=15
threads=2
db=cairn_pgbench
while getopts "T:j:d:h" opt; do
    case "$opt" in
        T) duration=$OPTARG ;;
        j) threads=$OPTARG ;;
        d) db=$OPTARG ;;
        h) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [-T seconds] [-j threads] [-d database] [clients ...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ "$#" -gt 0 ]; then clients=("$@"); else clients=(1 8 64); fi
[[ "$db" =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "database name must match [a-z_][a-z0-9_]*: $db" >&2; exit 2; }
[[ "$duration" =~ ^[1-9][0-9]*$ && "$threads" =~ ^[1-9][0-9]*$ ]] || { echo "-T and -j take positive integers" >&2; exit 2; }
for c in "${clients[@]}"; do
    [[ "$c" =~ ^[1-9][0-9]*$ ]] || { echo "not a client count: $c" >&2; exit 2; }
done

export PGHOST=${PGHOST:-127.0.0.1}
export PGPORT=${PGPORT:-5432}
export PGUSER=${PGUSER:-postgres}

# Find the client tools.
bindir=
if ! command -v pgbench >/dev/null 2>&1; then
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$bindir" ] && [ -x "$bindir/pgbench" ] || { echo "pgbench not found" >&2; exit 1; }
    bindir=$bindir/
fi
PGBENCH=${bindir}pgbench
PSQL=${bindir}psql

psql_admin() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -d postgres "$@"; }
psql_db() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"; }

exists=$(psql_admin -At -c "SELECT count(*) FROM pg_database WHERE datname = '$db'")
if [ "$exists" != 0 ]; then
    echo "database $db already exists; drop it or pick another with -d" >&2
    exit 1
fi

workdir=$(mktemp -d)
created=0
cleanup() {
    rm -rf "$workdir"
    if [ "$created" = 1 ]; then
        psql_admin -c "DROP DATABASE IF EXISTS \"$db\"" || echo "could not drop database $db" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_admin -c "CREATE DATABASE \"$db\""
created=1

# Shaped like Cairn's events table.
psql_db <<'SQL'
CREATE TABLE events (
    global_position bigserial PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    stream text NOT NULL,
    position bigint NOT NULL,
    category text NOT NULL,
    type text NOT NULL,
    data text NOT NULL,
    metadata text,
    causation_id uuid,
    correlation_id text,
    time timestamptz NOT NULL,
    UNIQUE (stream, position)
);
CREATE INDEX events_category_global_position ON events (category, global_position);
SQL

# One event per transaction; every insert is a new stream at position 0.
cat >"$workdir/insert.sql" <<'SQL'
INSERT INTO events (id, stream, position, category, type, data, metadata, time)
VALUES (gen_random_uuid(), 'bench-' || :client_id || '-' || random()::text, 0,
        'bench', 'Benched', '{"n":' || :client_id || '}', NULL, now());
SQL

server=$(psql_db -At -c 'SHOW server_version')
echo "pgbench baseline: Postgres $server at $PGHOST:$PGPORT, database $db, ${duration}s per run"
results=()
for c in "${clients[@]}"; do
    j=$(( threads < c ? threads : c ))
    psql_db -c 'TRUNCATE events RESTART IDENTITY' -c 'CHECKPOINT'
    echo "--- clients=$c threads=$j"
    out=$("$PGBENCH" -n -c "$c" -j "$j" -T "$duration" -f "$workdir/insert.sql" "$db" 2>&1) || {
        echo "$out" >&2
        exit 1
    }
    echo "$out" | grep -E '^(number of (transactions actually processed|failed transactions)|latency average|tps)' || true
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1)
    lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' | head -n 1)
    rows=$(psql_db -At -c 'SELECT count(*) FROM events')
    results+=("$(printf '%8s %12s %14s %12s' "$c" "${tps:-?}" "${lat:-?}" "$rows")")
done

echo
printf '%8s %12s %14s %12s\n' clients tps 'latency_ms' rows
printf '%s\n' "${results[@]}"
