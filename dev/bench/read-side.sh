#!/usr/bin/env bash
# Read-side figures beside their baseline, in one stack (run under `dev/stack exec`):
#   1. raw PostgreSQL: one-row INSERT transactions from 1 and 16 pgbench clients (the
#      WAL-flush bound a projector that commits once per event cannot beat);
#   2. each read_bench binary given as an argument (e.g. an older build, then this one).
# Usage: dev/stack exec -- dev/bench/read-side.sh BIN [BIN...]
set -euo pipefail
: "${DATABASE_URL:?run under dev/stack exec}"
script=$(mktemp)
trap 'rm -f "$script"' EXIT
psql -X -q "$DATABASE_URL" -c "DROP TABLE IF EXISTS pgbench_events; CREATE TABLE pgbench_events (id bigserial PRIMARY KEY, payload jsonb NOT NULL)"
echo "INSERT INTO pgbench_events (payload) VALUES ('{\"content\": \"benchmark message\"}');" >"$script"
for clients in 1 16; do
    tps=$(pgbench -n -c "$clients" -j "$clients" -T 10 -f "$script" "$DATABASE_URL" 2>/dev/null \
        | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    echo "baseline: pgbench one-row INSERT transactions, $clients clients: $tps tx/s"
done
for bin in "$@"; do
    echo "== $bin"
    "$bin"
done
