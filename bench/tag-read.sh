#!/usr/bin/env bash
# Tag reads as the store grows (issue 12): on a fresh release server over a
# fresh Postgres database, appends SMALL events (1,000 of them tagged
# `probe`, spread among the rest), times READS reads of
# `GET /events?tag=probe&limit=1000` (each returning the 1,000 tagged events),
# then grows the same store to LARGE events without restarting and times the
# same reads again. Prints the mean milliseconds a read at both sizes and
# their ratio (about 1 when a read costs what it matches, not what the store
# holds).
#
# Usage: bench/tag-read.sh [SMALL] [LARGE] [READS]   (defaults 10000 1000000 50)
# Needs: cargo, curl, createdb/dropdb on PGHOST:PGPORT as PGUSER (127.0.0.1,
# 5432, postgres; trust auth). CAIRN_BIN: measure this binary instead of
# building the checkout.
set -euo pipefail

cd "$(dirname "$0")/.."
small=${1:-10000}
large=${2:-1000000}
reads=${3:-50}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
if [ -z "${CAIRN_BIN:-}" ]; then
    cargo build --release --quiet --bin cairn
    CAIRN_BIN=${CARGO_TARGET_DIR:-target}/release/cairn
fi

work=$(mktemp -d)
db="cairn_tagread_$(date +%s%N)"
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    dropdb --if-exists "$db" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

createdb "$db"
port=$((20000 + RANDOM % 20000))
export CAIRN_URL="http://127.0.0.1:$port"
DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db" "$CAIRN_BIN" serve --listen "127.0.0.1:$port" \
    >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -fs "$CAIRN_URL/health" >/dev/null && break; sleep 0.1; done

# batch FIRST TAGGED: the NDJSON of 1,000 events numbered from FIRST, every
# one tagged `probe` when TAGGED is 1, none otherwise.
batch() {
    awk -v first="$1" -v tagged="$2" 'BEGIN {
        for (i = 0; i < 1000; i++) {
            tags = tagged == 1 ? ",\"tags\":[\"probe\",\"n:" (first + i) "\"]" : ""
            printf "{\"type\":\"Filled\",\"data\":{\"n\":%d}%s}\n", first + i, tags
        }
    }'
}

# grow FROM TO: appends events FROM..TO-1 in batches of 1,000 to their own
# streams, four at a time.
grow() {
    local from=$1 to=$2
    for ((start = from; start < to; start += 4000)); do
        local appends=()
        for ((b = start; b < start + 4000 && b < to; b += 1000)); do
            batch "$b" 0 | "$CAIRN_BIN" append "bulk-$b" >/dev/null &
            appends+=($!)
        done
        wait "${appends[@]}"
    done
}

# time_reads: the mean milliseconds of READS tag reads, each checked to hold
# the 1,000 tagged events.
time_reads() {
    local total=0
    for _ in $(seq "$reads"); do
        local answer
        answer=$(curl -fsS -o "$work/page.json" -w '%{time_total}' "$CAIRN_URL/events?tag=probe&limit=1000")
        [ "$(grep -o '"probe"' "$work/page.json" | wc -l)" -eq 1000 ] ||
            { echo "a read did not hold the 1,000 tagged events" >&2; exit 1; }
        total=$(awk -v t="$total" -v a="$answer" 'BEGIN {print t + a}')
    done
    awk -v t="$total" -v n="$reads" 'BEGIN {printf "%.2f", 1000 * t / n}'
}

# The tagged events sit in the middle of the first SMALL events.
grow 0 $((small / 2))
batch $((small / 2)) 1 | "$CAIRN_BIN" append "tagged-1" >/dev/null
grow $((small / 2 + 1000)) "$small"
curl -fsS "$CAIRN_URL/events?tag=probe&limit=1" >/dev/null # warm
at_small=$(time_reads)
echo "$small events: a tag read of 1,000 events takes ${at_small} ms"
grow "$small" "$large"
at_large=$(time_reads)
echo "$large events: a tag read of 1,000 events takes ${at_large} ms"
awk -v a="$at_large" -v b="$at_small" 'BEGIN {printf "large/small %.2f\n", a / b}'
