#!/usr/bin/env bash
# The cost of schema validation on appends (issue 14): on one fresh release
# server per store, ROUNDS times alternately, `cairn-bench` appends EVENTS
# single-event requests from 64 clients with no schema for their type, then
# with a schema registered for it (`{"n": integer}`, which every event
# matches), then removes it. Prints each run's events/s and with/without.
#
# Usage: bench/schemas.sh [STORE] [ROUNDS] [EVENTS]
#   STORE: sqlite, postgres or both (default both); defaults 3 20000.
# Needs what bench/server.sh says. CAIRN_BIN / CAIRN_BENCH: measure these
# binaries instead of building the checkout.
set -euo pipefail

cd "$(dirname "$0")/.."
store=${1:-both}
rounds=${2:-3}
events=${3:-20000}
# shellcheck source=bench/server.sh
. bench/server.sh

schema='{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 0}}}'

measure() {
    local kind=$1
    start "$kind"
    echo "== $kind: $rounds rounds of $events appends from 64 clients"
    for round in $(seq "$rounds"); do
        local without with
        without=$(append 64)
        curl -fsS -X PUT "$CAIRN_URL/schemas/Benched" -H 'Content-Type: application/json' \
            -d "$schema" >/dev/null
        with=$(append 64)
        curl -fsS -X DELETE "$CAIRN_URL/schemas/Benched" >/dev/null
        awk -v a="$without" -v b="$with" -v r="$round" 'BEGIN {
            printf "round %d: no schema %.0f events/s, schema %.0f events/s, with/without %.2f\n",
                r, a, b, b / a }'
    done
    stop
}

each_store "$store" measure
