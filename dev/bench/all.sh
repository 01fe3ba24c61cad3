#!/usr/bin/env bash
# Every row of docs/benchmarks.md's dated ratio table in one run, on a fresh machine:
# builds the release benchmarks, starts a fresh stack (dev/stack exec: PostgreSQL with
# its default durability and the broker), measures the pgbench baselines on that
# PostgreSQL (dev/bench/beside-pgbench.sh: one-row INSERTs, and one realistic event row
# per transaction), then runs the command (`bench`: HTTP commands, the 100,000-event
# stream), read-side (`read_bench`: freshness, rebuild), audit (`audit_bench`) and webhook
# (`delivery_bench`) benchmarks, each printing its ratios against the baselines beside it;
# then local embedding beside numpy (dev/bench/embed-baseline.sh) and idle memory
# (dev/bench/idle-rss.sh, its own `dev/stack run`). Ends with the lines the table is
# written from.
# Usage: dev/bench/all.sh   (BENCH_TARGET_DIR, BASELINE_CLIENTS, BASELINE_ROWS, AUDIT_EVENTS,
#                            READ_BENCH_MESSAGES override the defaults; BENCH_SKIP="embed rss"
#                            leaves those two out)
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${BENCH_TARGET_DIR:-$PWD/../bench-target}"
CARGO_TARGET_DIR="$target" cargo build --release \
    -p command-api --example bench -p e2e --example read_bench --example audit_bench \
    -p webhook-delivery --example delivery_bench -p embeddings --example embed_bench
export BASELINE_CLIENTS="${BASELINE_CLIENTS:-1 32 64}" BASELINE_ROWS="${BASELINE_ROWS:-1 10}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "== $(date -u +%FT%TZ) at $(git rev-parse --short HEAD)" | tee "$out"
dev/stack exec -- dev/bench/beside-pgbench.sh \
    "$target/release/examples/bench" \
    "$target/release/examples/read_bench" \
    "$target/release/examples/audit_bench" \
    "$target/release/examples/delivery_bench" | tee -a "$out"
case " ${BENCH_SKIP:-} " in *" embed "*) ;; *)
    echo "== local embedding beside numpy" | tee -a "$out"
    dev/bench/embed-baseline.sh "$target/release/examples/embed_bench" 600 | tee -a "$out" ;;
esac
case " ${BENCH_SKIP:-} " in *" rss "*) ;; *)
    echo "== idle memory" | tee -a "$out"
    dev/bench/idle-rss.sh | tee -a "$out" ;;
esac
echo
echo "== the lines the ratio table is written from (docs/benchmarks.md)"
grep -E '^== 20|^baseline:|ratio|long stream|freshness|rebuild|replay|deliver|chunks/s|MiB' "$out"
