#!/usr/bin/env bash
# Benchmarks beside their raw PostgreSQL baseline, in one stack (run under `dev/stack exec`):
#   1. pgbench on the same server: transactions of BASELINE_ROWS one-row INSERTs each
#      (default 1: the WAL-flush bound of committing every write alone; 10 shows what
#      batching buys) from each of BASELINE_CLIENTS clients (default "1 16");
#   2. each benchmark binary given as an argument (e.g. an older build, then this one),
#      with each baseline in its environment (PGBENCH_<rows>ROWS_<clients>C, rows/s) so
#      that it prints its ratios against them.
# Usage: [BASELINE_CLIENTS="1 32 64"] [BASELINE_ROWS="1 10"] \
#        dev/stack exec -- dev/bench/beside-pgbench.sh BIN [BIN...]
set -euo pipefail
: "${DATABASE_URL:?run under dev/stack exec}"
script=$(mktemp)
trap 'rm -f "$script"' EXIT
psql -X -q "$DATABASE_URL" -c "DROP TABLE IF EXISTS pgbench_events; CREATE TABLE pgbench_events (id bigserial PRIMARY KEY, payload jsonb NOT NULL)"
for rows in ${BASELINE_ROWS:-1}; do
    : >"$script"
    [ "$rows" -gt 1 ] && echo "BEGIN;" >>"$script"
    for _ in $(seq "$rows"); do
        echo "INSERT INTO pgbench_events (payload) VALUES ('{\"content\": \"benchmark message\"}');" >>"$script"
    done
    [ "$rows" -gt 1 ] && echo "COMMIT;" >>"$script"
    for clients in ${BASELINE_CLIENTS:-1 16}; do
        tps=$(pgbench -n -c "$clients" -j "$clients" -T 10 -f "$script" "$DATABASE_URL" 2>/dev/null \
            | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
        rate=$(awk -v t="$tps" -v r="$rows" 'BEGIN { printf "%.0f", t * r }')
        echo "baseline: pgbench, $rows one-row INSERT(s) per transaction, $clients clients: $tps tx/s ($rate rows/s)"
        # The benchmarks print their ratios against it (testkit::latency::pgbench_rows_per_second).
        export "PGBENCH_${rows}ROWS_${clients}C=$rate"
    done
done
for bin in "$@"; do
    echo "== $bin"
    "$bin"
done
