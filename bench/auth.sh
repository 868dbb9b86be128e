#!/usr/bin/env bash
# The cost of authentication on appends: single-event appends with wrk at
# CLIENTS connections for SECONDS, against a fresh release server on a fresh
# Postgres database per run, with auth off, an API key, an HS256 JWT and an
# ES256 JWT (JWKS file), in ROUNDS alternating rounds. Prints requests per
# second per run and, per round, each mode's ratio to auth off.
#
# Usage: bench/auth.sh [SECONDS] [CLIENTS] [ROUNDS]   (defaults 10 64 3)
# Needs: cargo, wrk (installed with apt-get if missing), psql/createdb on
# PGHOST:PGPORT as PGUSER (127.0.0.1, 5432, postgres; trust auth), python3
# (PyJWT and cryptography are installed into a venv under /tmp to mint the
# tokens).
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${1:-10}
clients=${2:-64}
rounds=${3:-3}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
cargo build --release --quiet --bin cairn
bin=${CARGO_TARGET_DIR:-target}/release/cairn

work=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

venv=/tmp/cairn-bench-auth-venv
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q "pyjwt[crypto]==2.10.1"; }
admin_key="cairn_bench-admin-key-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
hmac_secret="bench-hmac-secret-$RANDOM$RANDOM"
"$venv/bin/python" - "$work" "$hmac_secret" <<'PY'
import json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
work, secret = sys.argv[1], sys.argv[2]
claims = {"exp": int(time.time()) + 3600, "scope": "cairn:write"}
open(f"{work}/hs256", "w").write(jwt.encode(claims, secret, algorithm="HS256"))
key = ec.generate_private_key(ec.SECP256R1())
jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
jwk.update({"kid": "bench", "alg": "ES256", "use": "sig"})
open(f"{work}/jwks.json", "w").write(json.dumps({"keys": [jwk]}))
open(f"{work}/es256", "w").write(jwt.encode(claims, key, algorithm="ES256", headers={"kid": "bench"}))
PY

# run MODE: one measured run; prints requests per second.
run() {
    local mode=$1 credential= flags=()
    case "$mode" in
        off) ;;
        key) flags=(--admin-key "$admin_key"); credential=$admin_key ;;
        hs256) flags=(--jwt-secret "$hmac_secret"); credential=$(cat "$work/hs256") ;;
        es256) flags=(--jwt-jwks "$work/jwks.json"); credential=$(cat "$work/es256") ;;
    esac
    local db="cairn_auth_$(date +%s%N)"
    createdb "$db"
    local port=$((20000 + RANDOM % 20000))
    DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db" "$bin" serve --listen "127.0.0.1:$port" "${flags[@]}" \
        >"$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
    cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Host"] = "localhost"
if "$credential" ~= "" then wrk.headers["Authorization"] = "Bearer $credential" end
wrk.body = '{"type":"Deposited","data":{"amount":10}}'
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/streams/account-" .. math.random(1, 2000000000) .. "-" .. n)
end
done = function(summary, latency, requests)
  io.write(string.format("non2xx %d\n", summary.errors.status))
end
LUA
    wrk -t2 -c"$clients" -d"${seconds}s" -s "$work/post.lua" "http://127.0.0.1:$port" >"$work/wrk.log"
    kill "$server"; wait "$server" 2>/dev/null || true; server=
    dropdb "$db"
    grep -q "^non2xx 0$" "$work/wrk.log" || { echo "$mode: some appends failed" >&2; cat "$work/wrk.log" >&2; exit 1; }
    awk '/Requests\/sec/ {print $2}' "$work/wrk.log"
}

modes=(off key hs256 es256)
echo "appends/s, $clients clients, $seconds s per run"
for round in $(seq "$rounds"); do
    declare -A rate=()
    for mode in "${modes[@]}"; do rate[$mode]=$(run "$mode"); done
    line="round $round:"
    for mode in "${modes[@]}"; do line+=" $mode ${rate[$mode]}"; done
    line+="  ratio to off:"
    for mode in key hs256 es256; do
        line+=" $mode $(awk -v a="${rate[$mode]}" -v b="${rate[off]}" 'BEGIN {printf "%.3f", a / b}')"
    done
    echo "$line"
done
