#!/usr/bin/env python3
"""A plain-numpy baseline for crates/embeddings/examples/embed_bench.rs.

Runs all-MiniLM-L6-v2 (BERT encoder, mean pooling over the attention mask, L2
normalisation: the recipe of crates/embeddings/src/local.rs) with numpy on the texts an
`EMBED_BENCH_DUMP` file holds, 32 per batch padded to the longest, prints chunks/s and
tokens/s in embed_bench's format, and checks the dump's vectors against its own.
Run by dev/bench/embed-baseline.sh; by hand:

    python3 dev/bench/embed-baseline.py DUMP.json [MODEL_DIR]
"""

import json
import math
import os
import sys
import time

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

BATCH = 32
MAX_SEQUENCE = 256
MIN_COSINE = 0.999


def blas_line():
    """numpy's BLAS library and its thread count, in one line."""
    name, version = "unknown", ""
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        name, version = deps.get("name", name), deps.get("version", "")
    except Exception:  # older numpy: show_config() only prints
        pass
    return f"numpy {np.__version__}, BLAS {name} {version}, threads {blas_threads()}"


def blas_threads():
    """The thread count of the OpenBLAS numpy's wheel bundles (numpy.libs/), asked with
    ctypes; the environment's setting or the core count where that fails."""
    import ctypes
    import glob

    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in glob.glob(os.path.join(libs, "*openblas*.so*")):
        lib = ctypes.CDLL(path)
        for symbol in (
            "scipy_openblas_get_num_threads64_",
            "scipy_openblas_get_num_threads",
            "openblas_get_num_threads64_",
            "openblas_get_num_threads",
        ):
            if hasattr(lib, symbol):
                return getattr(lib, symbol)()
    return os.environ.get("OPENBLAS_NUM_THREADS") or f"{os.cpu_count()}? (cores)"


class Bert:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.eps = config["layer_norm_eps"]
        assert config["hidden_act"] == "gelu", config["hidden_act"]
        w = load_file(os.path.join(model_dir, "model.safetensors"))
        # Both namings: with or without the `bert.` prefix.
        self.w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in w.items()}
        # Q, K and V of each layer as one matmul.
        for i in range(self.layers):
            p = f"encoder.layer.{i}.attention.self."
            self.w[p + "qkv.weight"] = np.concatenate(
                [self.w[p + n + ".weight"].T for n in ("query", "key", "value")], axis=1
            )
            self.w[p + "qkv.bias"] = np.concatenate([self.w[p + n + ".bias"] for n in ("query", "key", "value")])
            for n in ("attention.output.dense", "intermediate.dense", "output.dense"):
                q = f"encoder.layer.{i}.{n}.weight"
                self.w[q + ".T"] = np.ascontiguousarray(self.w[q].T)

    def layer_norm(self, x, prefix):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[prefix + ".weight"] + self.w[prefix + ".bias"]

    def forward(self, ids, mask):
        """ids, mask: (rows, width) int arrays -> (rows, width, hidden)."""
        w = self.w
        rows, width = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:width][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        x = self.layer_norm(x, "embeddings.LayerNorm")
        hidden = x.shape[-1]
        head = hidden // self.heads
        # Additive mask: padding keys get a large negative score.
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(np.float32)
        scale = np.float32(1.0 / math.sqrt(head))
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            qkv = x @ w[p + "attention.self.qkv.weight"] + w[p + "attention.self.qkv.bias"]
            qkv = qkv.reshape(rows, width, 3, self.heads, head).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # rows x heads x width x head
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(rows, width, hidden)
            attn = ctx @ w[p + "attention.output.dense.weight.T"] + w[p + "attention.output.dense.bias"]
            x = self.layer_norm(attn + x, p + "attention.output.LayerNorm")
            h = x @ w[p + "intermediate.dense.weight.T"] + w[p + "intermediate.dense.bias"]
            h = gelu_erf(h)
            out = h @ w[p + "output.dense.weight.T"] + w[p + "output.dense.bias"]
            x = self.layer_norm(out + x, p + "output.LayerNorm")
        return x


_exact_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x):
    """erf of an array without scipy: Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7,
    below float32's resolution for GELU (checked against math.erf at start)."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
    return s * (1.0 - poly * np.exp(-a * a))


def gelu_erf(x):
    return (0.5 * x * (1.0 + erf(x * np.float32(1.0 / math.sqrt(2.0))))).astype(np.float32)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    dump_path = sys.argv[1]
    model_dir = (
        sys.argv[2]
        if len(sys.argv) > 2
        else os.environ.get(
            "EMBEDDING_MODEL_DIR", os.path.expanduser("~/.cache/threadline/models/all-MiniLM-L6-v2")
        )
    )
    print(blas_line())

    # Sanity check of the fast erf against math.erf.
    probe = np.linspace(-6, 6, 2001, dtype=np.float64)
    worst = float(np.max(np.abs(erf(probe) - _exact_erf(probe).astype(np.float64))))
    assert worst < 2e-7, f"erf approximation off by {worst}"

    with open(dump_path) as f:
        dump = json.load(f)
    texts, theirs = dump["texts"], dump["vectors"]
    n = len(texts)

    started = time.perf_counter()
    model = Bert(model_dir)
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tokenizer.no_padding()  # the shipped file pads every text to 128
    tokenizer.enable_truncation(MAX_SEQUENCE)  # special tokens included
    pad = tokenizer.token_to_id("[PAD]")
    print(f"loaded local/all-MiniLM-L6-v2 (numpy) in {time.perf_counter() - started:.2f}s")

    # Content tokens (without [CLS]/[SEP]), counted as embed_bench counts them.
    tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
    print(f"{n} chunks, {tokens / max(n, 1):.0f} tokens each on average")

    def embed(batch):
        encodings = tokenizer.encode_batch(batch)
        cut = sum(1 for e in encodings if e.overflowing)
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(batch), width), pad, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.float32)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1.0
        hidden = model.forward(ids, mask)
        summed = (hidden * mask[:, :, None]).sum(1)
        pooled = summed / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True), cut

    # Warm-up, as embed_bench does.
    embed(texts[:BATCH])

    ours, cut = [], 0
    started = time.perf_counter()
    for at in range(0, n, BATCH):
        vectors, c = embed(texts[at : at + BATCH])
        cut += c
        if len(ours) < len(theirs):
            ours.extend(vectors[: len(theirs) - len(ours)])
    elapsed = time.perf_counter() - started
    print(
        f"embedded {n} chunks in {elapsed:.2f}s: {n / elapsed:.1f} chunks/s, {tokens / elapsed:.0f} tokens/s"
    )
    print(f"texts cut at {MAX_SEQUENCE} tokens: {cut}")

    if not theirs:
        sys.exit("the dump has no vectors to compare with")
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    low = float(cosines.min())
    print(f"vectors compared: {len(cosines)}, min cosine {low:.6f}, max |diff| {np.abs(a - b).max():.2e}")
    if low < MIN_COSINE:
        sys.exit(f"error: min cosine {low:.6f} is below {MIN_COSINE}: the baseline does not compute the same vectors")


if __name__ == "__main__":
    main()
