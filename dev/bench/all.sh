#!/usr/bin/env bash
# Every speed figure of docs/benchmarks.md' ratio table in one run, on a fresh machine:
# builds the release benchmarks, starts a fresh stack (dev/stack exec: PostgreSQL with
# its default durability and the broker), measures the pgbench baselines on that
# PostgreSQL (dev/bench/beside-pgbench.sh), then runs the command, read-side and audit
# benchmarks, each printing its ratios against the baselines and against stock cqrs-es.
# Idle memory is measured separately (dev/bench/idle-rss.sh: it needs `dev/stack run`).
# Usage: dev/bench/all.sh   (BENCH_TARGET_DIR, BASELINE_CLIENTS, BASELINE_ROWS, AUDIT_EVENTS,
#                            READ_BENCH_MESSAGES override the defaults)
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${BENCH_TARGET_DIR:-$PWD/../bench-target}"
CARGO_TARGET_DIR="$target" cargo build --release \
    -p command-api --example bench -p e2e --example read_bench --example audit_bench
export BASELINE_CLIENTS="${BASELINE_CLIENTS:-1 32 64}" BASELINE_ROWS="${BASELINE_ROWS:-1 10}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
dev/stack exec -- dev/bench/beside-pgbench.sh \
    "$target/release/examples/bench" \
    "$target/release/examples/read_bench" \
    "$target/release/examples/audit_bench" | tee "$out"
echo
echo "== the ratio table (docs/benchmarks.md)"
grep -E '^baseline:|ratio' "$out"
