#!/usr/bin/env bash
# Idle resident memory (VmRSS) of every process `dev/stack run` starts: the services as the
# stack runs them (debug builds: an upper bound for release images), PostgreSQL's
# postmaster and the broker. Starts its own stack (THREADLINE_STACK_NAME=rss-<pid>), waits
# until both APIs are ready, lets everything idle IDLE_SECS (default 30), prints, stops.
# Usage: dev/bench/idle-rss.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
name="rss-$$"
log=$(mktemp)
THREADLINE_STACK_NAME="$name" dev/stack run >"$log" 2>&1 &
stack=$!
stop() {
    # A background job of a script ignores SIGINT: stop the stack with SIGTERM.
    kill -TERM "$stack" 2>/dev/null || true
    wait "$stack" 2>/dev/null || true
    # `run` keeps its cluster between runs; this one is not needed again.
    [ -f ".stack/$name/pg.path" ] && rm -rf "$(cat ".stack/$name/pg.path")"
    rm -rf ".stack/$name" "$log"
}
trap stop EXIT
ready=0
for _ in $(seq 900); do
    if curl -sf "http://${COMMAND_API_ADDR:-127.0.0.1:8080}/readyz" >/dev/null \
        && curl -sf "http://${QUERY_API_ADDR:-127.0.0.1:8081}/readyz" >/dev/null; then
        ready=1
        break
    fi
    kill -0 "$stack" 2>/dev/null || break
    sleep 1
done
[ "$ready" = 1 ] || { tail -30 "$log"; echo "the stack did not become ready" >&2; exit 1; }
sleep "${IDLE_SECS:-30}"
rss() { awk '/^VmRSS/ { printf "%7.1f MiB", $2 / 1024 }' "/proc/$1/status"; }
for pid in $(cat ".stack/$name/services.pid"); do
    printf '%s  %s\n' "$(rss "$pid")" "$(basename "$(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -d' ' -f1)")"
done
data=$(cat ".stack/$name/pg.path" 2>/dev/null || echo ".stack/$name/pg")
for file in ".stack/$name/broker.pid" "$data/postmaster.pid"; do
    pid=$(head -1 "$file" 2>/dev/null || true)
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && printf '%s  %s\n' "$(rss "$pid")" "$(basename "$(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -d' ' -f1)") (one process)"
done
