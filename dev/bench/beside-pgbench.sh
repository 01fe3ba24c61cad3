#!/usr/bin/env bash
# Benchmarks beside their raw PostgreSQL baseline, in one stack (run under `dev/stack exec`):
#   1. pgbench on the same server: transactions of BASELINE_ROWS one-row INSERTs each
#      (default 1: the WAL-flush bound of committing every write alone; 10 shows what
#      batching buys) from each of BASELINE_CLIENTS clients (default "1 16"), then one
#      realistic event row per transaction (the events table's shape, a ~300-byte payload);
#   2. each benchmark binary given as an argument (e.g. an older build, then this one),
#      with each baseline in its environment (PGBENCH_<rows>ROWS_<clients>C, rows/s) so
#      that it prints its ratios against them.
# Usage: [BASELINE_CLIENTS="1 32 64"] [BASELINE_ROWS="1 10"] \
#        dev/stack exec -- dev/bench/beside-pgbench.sh BIN [BIN...]
set -euo pipefail
: "${DATABASE_URL:?run under dev/stack exec}"
script=$(mktemp)
trap 'rm -f "$script"' EXIT
psql -X -q "$DATABASE_URL" -c "SET client_min_messages = warning; DROP TABLE IF EXISTS pgbench_events; CREATE TABLE pgbench_events (id bigserial PRIMARY KEY, payload jsonb NOT NULL)"
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
# The realistic row: the events table's shape (crates/event-store/migrations/1001: the
# composite key, identity, generated tenant, defaults and its four indexes; not its
# triggers, which are ours), a MessageSent-sized jsonb payload (~300 bytes) and metadata,
# prepared statements: one event per transaction, what a command's append cannot go below.
psql -X -q "$DATABASE_URL" <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS pgbench_realistic;
CREATE TABLE pgbench_realistic (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    sequence bigint NOT NULL CHECK (sequence > 0),
    event_type text NOT NULL, event_version text NOT NULL,
    payload jsonb NOT NULL, metadata jsonb NOT NULL,
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    event_id uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id text GENERATED ALWAYS AS (metadata ->> 'tenant_id') STORED,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence));
CREATE UNIQUE INDEX ON pgbench_realistic (tx_id, global_position);
CREATE UNIQUE INDEX ON pgbench_realistic (event_id);
CREATE INDEX ON pgbench_realistic (tenant_id, tx_id, global_position);
CREATE INDEX ON pgbench_realistic (tenant_id, recorded_at);
SQL
cat >"$script" <<'SQL'
INSERT INTO pgbench_realistic (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ('conversation', gen_random_uuid()::text, 1, 'MessageSent', '3',
  '{"conversation_id": "0192f0d4-8c1e-7d2a-9b7e-3f1a2c4d5e6f", "message_id": "0192f0d4-8c1f-7a55-8e21-5b6c7d8e9f01", "role": "user", "content": "When does the quarterly report go out, and who signs it off?", "model": null, "prompt_tokens": null, "completion_tokens": null, "sent_at": "2026-12-07T16:00:00.000000Z", "reply_to": null, "latency_ms": null, "sources": []}'::jsonb,
  '{"tenant_id": "bench", "actor": "writer", "correlation_id": "0192f0d4-8c20-7b3c-a1d2-e3f4a5b6c7d8", "causation_id": "0192f0d4-8c20-7b3c-a1d2-e3f4a5b6c7d8", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}'::jsonb);
SQL
for clients in ${BASELINE_CLIENTS:-1 16}; do
    tps=$(pgbench -n -M prepared -c "$clients" -j "$clients" -T 10 -f "$script" "$DATABASE_URL" 2>/dev/null \
        | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    echo "baseline: pgbench, one realistic event row (the events table's shape) per transaction, $clients clients: $tps tx/s"
    export "PGBENCH_REALISTIC_${clients}C=$tps"
done
psql -X -q "$DATABASE_URL" -c "DROP TABLE pgbench_realistic"
for bin in "$@"; do
    echo "== $bin"
    "$bin"
done
