#!/usr/bin/env bash
# Local embedding throughput beside a plain-numpy baseline of the same model:
#   1. runs the Rust embed_bench example with EMBED_BENCH_DUMP set, which writes its
#      chunks and the first 50 vectors it computed;
#   2. runs dev/bench/embed-baseline.py (all-MiniLM-L6-v2 in numpy + OpenBLAS) on the
#      same chunks, 32 per batch, which checks those vectors (min cosine >= 0.999);
#   3. prints `ours / numpy baseline: X.XX` (the ratio of chunks/s).
# The baseline's Python packages (numpy, tokenizers, safetensors) go into a venv made
# once under ${THREADLINE_CACHE:-~/.cache/threadline}/bench-venv.
#
# Usage, from anywhere (build the example first):
#   CARGO_TARGET_DIR=../bench-target cargo build --release -p embeddings --example embed_bench
#   dev/bench/embed-baseline.sh [BIN [N]]
# BIN defaults to ../bench-target/release/examples/embed_bench (relative to the repo
# root); N, the number of chunks, to embed_bench's default (2000). The model comes from
# ${EMBEDDING_MODEL_DIR:-~/.cache/threadline/models/all-MiniLM-L6-v2}.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${1:-$root/../bench-target/release/examples/embed_bench}
n=${2:-}
export EMBEDDING_MODEL_DIR=${EMBEDDING_MODEL_DIR:-$HOME/.cache/threadline/models/all-MiniLM-L6-v2}
venv=${THREADLINE_CACHE:-$HOME/.cache/threadline}/bench-venv

[[ -x $bin ]] || { echo "no embed_bench binary at $bin: build it first (see the header of $0)" >&2; exit 1; }
[[ -f $EMBEDDING_MODEL_DIR/model.safetensors ]] || { echo "no model in $EMBEDDING_MODEL_DIR" >&2; exit 1; }

if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import numpy, tokenizers, safetensors' 2>/dev/null; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        echo "== installing python3-venv"
        apt-get install -y -q python3-venv >/dev/null
    fi
    echo "== creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check numpy tokenizers safetensors
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== ours: $bin ${n}"
EMBED_BENCH_DUMP=$work/dump.json "$bin" ${n:+"$n"} | tee "$work/ours.log"
echo "== numpy baseline"
"$venv/bin/python" -u "$root/dev/bench/embed-baseline.py" "$work/dump.json" | tee "$work/baseline.log"

rate() { sed -n 's/^embedded .*: \([0-9.]*\) chunks\/s.*/\1/p' "$1"; }
ours_rate=$(rate "$work/ours.log")
base_rate=$(rate "$work/baseline.log")
[[ -n $ours_rate && -n $base_rate ]] || { echo "could not read chunks/s from both runs" >&2; exit 1; }
awk -v o="$ours_rate" -v b="$base_rate" 'BEGIN { printf "ours / numpy baseline: %.2f (%s vs %s chunks/s)\n", o / b, o, b }'
