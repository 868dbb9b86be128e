# Sourced by the bench scripts that run a release server of their own
# (retention.sh, schemas.sh), from the checkout's root: the binaries (built
# unless CAIRN_BIN and CAIRN_BENCH name them), a server over a fresh store,
# appends timed by cairn-bench, and the cleanup when the script exits.
# Needs: cargo, curl, jq, createdb/dropdb on PGHOST:PGPORT as PGUSER
# (127.0.0.1, 5432, postgres; trust auth).

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

# start KIND [FLAG…]: a release server with FLAGs over a fresh store of KIND
# (sqlite or postgres); sets CAIRN_URL once it answers.
start() {
    local kind=$1 port=$((20000 + RANDOM % 20000)) url
    shift
    if [ "$kind" = postgres ]; then
        db="cairn_bench_$(date +%s%N)"
        createdb "$db"
        url="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
    else
        url="sqlite://$work/$kind-$port.db"
    fi
    "$CAIRN_BIN" serve --listen "127.0.0.1:$port" --database-url "$url" "$@" >"$work/server.log" 2>&1 &
    server=$!
    export CAIRN_URL="http://127.0.0.1:$port"
    for _ in $(seq 100); do curl -fs "$CAIRN_URL/health" >/dev/null && return; sleep 0.1; done
    echo "the server did not start" >&2
    exit 1
}

# stop: stops the server and drops its database.
stop() {
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
    [ -n "$db" ] && dropdb --if-exists "$db"
    db=
}

# append CLIENTS: events/s of one cairn-bench run of $events single-event
# appends from CLIENTS clients.
append() {
    "$CAIRN_BENCH" --url "$CAIRN_URL" --events "$events" --clients "$1" --json 2>/dev/null |
        jq -r '.append.events_per_sec'
}

# each_store STORE FN: runs FN sqlite, FN postgres or both, as STORE says.
each_store() {
    case "$1" in
        both) "$2" sqlite; "$2" postgres ;;
        sqlite | postgres) "$2" "$1" ;;
        *) echo "STORE is sqlite, postgres or both, not $1" >&2; exit 2 ;;
    esac
}
