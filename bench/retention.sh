#!/usr/bin/env bash
# Appends while the retention sweep erases (issue 14): on a fresh release
# server sweeping every second, ROUNDS times:
#   1. fill category `old` with OLD events (1,000-event batches, 100 streams);
#   2. A: time `cairn-bench` appending EVENTS single-event requests from 8
#      clients, with nothing to erase;
#   3. set `{"max_count": 1}` on `old`, and B: time the same append while the
#      sweep erases `old` down to one event a stream; then time how long the
#      sweep took to finish, and remove the policy.
# Prints each round's events/s for A and B, B/A, and the sweep's duration (a
# sweep that outlasts B ran during the whole of it).
#
# Usage: bench/retention.sh [STORE] [ROUNDS] [OLD] [EVENTS]
#   STORE: sqlite, postgres or both (default both); defaults 3 200000 20000.
# Needs what bench/server.sh says. CAIRN_BIN / CAIRN_BENCH: measure these
# binaries instead of building the checkout.
set -euo pipefail

cd "$(dirname "$0")/.."
store=${1:-both}
rounds=${2:-3}
old=${3:-200000}
events=${4:-20000}
# shellcheck source=bench/server.sh
. bench/server.sh

# fill ROUND: OLD events into category `old`, 1,000 a request, four at a time.
fill() {
    local round=$1
    for ((start = 0; start < old; start += 4000)); do
        local appends=()
        for ((b = start; b < start + 4000 && b < old; b += 1000)); do
            awk -v first="$b" 'BEGIN { for (i = 0; i < 1000; i++)
                printf "{\"type\":\"Old\",\"data\":{\"n\":%d}}\n", first + i }' |
                "$CAIRN_BIN" append "old-$round+$((b / 1000 % 100))" >/dev/null &
            appends+=($!)
        done
        wait "${appends[@]}"
    done
}

# old_left: how many events category `old` still holds, past one a stream.
old_left() {
    local position=1 left=0 page
    while :; do
        page=$(curl -fsS "$CAIRN_URL/categories/old?position=$position&limit=1000")
        left=$((left + $(jq '.events | length' <<<"$page")))
        [ "$(jq .end <<<"$page")" = true ] && break
        position=$(jq .next_position <<<"$page")
    done
    echo "$left"
}

measure() {
    local kind=$1
    start "$kind" --retention-sweep-secs 1
    echo "== $kind: $rounds rounds, $old events to erase, $events appends from 8 clients"
    for round in $(seq "$rounds"); do
        fill "$round"
        local a b began sweep
        a=$(append 8)
        curl -fsS -X PUT "$CAIRN_URL/categories/old/retention" \
            -H 'Content-Type: application/json' -d '{"max_count": 1}' >/dev/null
        began=$(date +%s.%N)
        b=$(append 8)
        local b_secs
        b_secs=$(awk -v b="$began" -v n="$(date +%s.%N)" 'BEGIN {printf "%.1f", n - b}')
        local streams=$((round * 100))
        while [ "$(old_left)" -gt "$streams" ]; do sleep 0.2; done
        sweep=$(awk -v b="$began" -v n="$(date +%s.%N)" 'BEGIN {printf "%.1f", n - b}')
        curl -fsS -X DELETE "$CAIRN_URL/categories/old/retention" >/dev/null
        awk -v a="$a" -v b="$b" -v s="$sweep" -v bs="$b_secs" -v r="$round" 'BEGIN {
            printf "round %d: A %.0f events/s, B (sweeping) %.0f events/s, B/A %.2f; B took %s s, the sweep %s s\n",
                r, a, b, b / a, bs, s }'
    done
    stop
}

each_store "$store" measure
