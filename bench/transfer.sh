#!/usr/bin/env bash
# Export and import at two sizes, to see that both stream in constant
# memory. For each store and for N and N/10 events: a fresh release server
# on a fresh store gets the events (batches of 1,000 appended with
# `cairn append`, four at a time, over up to 1,000 streams) and is started
# again on the same store, so that its peak RSS counts the export alone;
# `cairn export` writes the store to a file, timed; a second fresh server
# of the same kind takes it with `cairn import`, timed. Prints events/s of
# the export and the import and the peak RSS (VmHWM) of the exporting and
# the importing server: with both streamed, the peaks stay put while the
# store grows tenfold.
#
# Usage: bench/transfer.sh [N] [STORE]   (defaults 1000000 both)
#   STORE: postgres, sqlite, or both.
# Needs: cargo, curl; for postgres, createdb/dropdb on PGHOST:PGPORT as
# PGUSER (127.0.0.1, 5432, postgres; trust auth). sqlite uses fresh
# --data-dirs. CAIRN_BIN: measure this binary instead of building the
# checkout. VERIFY=1 also exports the copy and compares it with the file.
set -euo pipefail

cd "$(dirname "$0")/.."
n=${1:-1000000}
store=${2:-both}
case "$store" in
    postgres) stores=postgres ;;
    sqlite) stores=sqlite ;;
    both) stores="postgres sqlite" ;;
    *) echo "STORE must be postgres, sqlite or both, not $store" >&2; exit 2 ;;
esac
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
if [ -z "${CAIRN_BIN:-}" ]; then
    cargo build --release --quiet --bin cairn
    CAIRN_BIN=${CARGO_TARGET_DIR:-target}/release/cairn
fi

work=$(mktemp -d)
server=
url=
rss=
databases=()
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    for db in "${databases[@]}"; do
        dropdb --if-exists "$db" || echo "could not drop database $db" >&2
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# fresh_store STORE NAME: a new, empty store; sets $url to its --database-url.
fresh_store() {
    if [ "$1" = postgres ]; then
        local db="cairn_transfer_$2_$(date +%s%N)"
        createdb "$db"
        databases+=("$db")
        url="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
    else
        mkdir -p "$work/$2"
        url="sqlite://$work/$2/cairn.db"
    fi
}

# serve URL: starts a server over the store at URL (setting $server and
# CAIRN_URL) and waits until it answers.
serve() {
    local port
    # Below the kernel's ephemeral ports, and one that nothing answers on.
    port=$((20000 + RANDOM % 12000))
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((20000 + RANDOM % 12000))
    done
    env -u DATABASE_URL -u CAIRN_DATA_DIR "$CAIRN_BIN" serve --listen "127.0.0.1:$port" \
        --database-url "$1" >>"$work/server.log" 2>&1 &
    server=$!
    export CAIRN_URL="http://127.0.0.1:$port"
    for _ in $(seq 100); do
        curl -fs "$CAIRN_URL/health" >/dev/null && return
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    echo "the server did not come up:" >&2
    tail -n 50 "$work/server.log" >&2
    exit 1
}

# stop: stops the server, setting $rss to its peak RSS in MiB first.
stop() {
    rss=$(awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$server/status")
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
}

# batch FIRST COUNT: the NDJSON of COUNT events numbered from FIRST.
batch() {
    awk -v first="$1" -v count="$2" 'BEGIN {
        for (i = 0; i < count; i++)
            printf "{\"type\":\"Filled\",\"data\":{\"n\":%d,\"note\":\"an event of a bench\"},\"tags\":[\"n:%d\"]}\n",
                first + i, (first + i) % 100
    }'
}

# grow COUNT: appends COUNT events in batches of 1,000, four at a time, each
# batch to one of 1,000 streams.
grow() {
    local count=$1
    for ((start = 0; start < count; start += 4000)); do
        local appends=()
        for ((b = start; b < start + 4000 && b < count; b += 1000)); do
            local size=$((count - b < 1000 ? count - b : 1000))
            batch "$b" "$size" | "$CAIRN_BIN" append "bulk-$(((b / 1000) % 1000))" >/dev/null &
            appends+=($!)
        done
        wait "${appends[@]}"
    done
}

# seconds COMMAND…: runs COMMAND, printing how many seconds it took.
seconds() {
    local started ended
    started=$(date +%s.%N)
    "$@"
    ended=$(date +%s.%N)
    awk -v a="$started" -v b="$ended" 'BEGIN {printf "%.2f", b - a}'
}

# measure STORE COUNT: one line of figures for COUNT events on STORE.
measure() {
    local store=$1 count=$2 source took_export took_import rss_export
    fresh_store "$store" "source-$count"
    source=$url
    serve "$source"
    grow "$count"
    stop
    serve "$source"
    took_export=$(seconds sh -c '"$0" export > "$1"' "$CAIRN_BIN" "$work/export.ndjson")
    stop
    rss_export=$rss
    fresh_store "$store" "copy-$count"
    serve "$url"
    took_import=$(seconds sh -c '"$0" import --json "$1" > "$2"' "$CAIRN_BIN" \
        "$work/export.ndjson" "$work/import.json")
    grep -q "\"events\":$count," "$work/import.json" ||
        { echo "the import did not restore $count events: $(cat "$work/import.json")" >&2; exit 1; }
    if [ "${VERIFY:-0}" = 1 ]; then
        "$CAIRN_BIN" export | cmp - "$work/export.ndjson" ||
            { echo "the copy does not export the same file" >&2; exit 1; }
    fi
    stop
    awk -v s="$store" -v n="$count" -v e="$took_export" -v i="$took_import" \
        -v re="$rss_export" -v ri="$rss" -v bytes="$(stat -c %s "$work/export.ndjson")" 'BEGIN {
        printf "%-8s %9d events (%5.0f MiB): export %8.0f events/s, peak RSS %4d MiB; import %8.0f events/s, peak RSS %4d MiB\n",
            s, n, bytes / 1048576, n / e, re, n / i, ri
    }'
    rm -f "$work/export.ndjson" "$work/import.json"
    rm -rf "$work/source-$count" "$work/copy-$count"
}

for s in $stores; do
    measure "$s" $((n / 10))
    measure "$s" "$n"
done
