//! Throughput of the local embedding provider: embeds N chunks (default 2000) of about
//! 100-200 tokens of varied prose, 32 per call, and prints chunks per second.
//!
//! Run it optimised, with the model files `dev/stack` installs:
//!
//! ```sh
//! EMBEDDING_MODEL_DIR=~/.cache/threadline/models/all-MiniLM-L6-v2 \
//!     cargo run --release -p embeddings --example embed_bench -- [N]
//! ```
//!
//! (or `dev/stack exec -- cargo run --release -p embeddings --example embed_bench`,
//! which installs the model and sets the variable). Debug builds are far slower and
//! say little about production.
//!
//! With `EMBED_BENCH_DUMP=<path>` set, it also writes the chunks and the vectors of the
//! first [`DUMP_VECTORS`] of them to that file as JSON (`{"texts": [...], "vectors":
//! [[...], ...]}`), for `dev/bench/embed-baseline.sh` to run a baseline on the same
//! texts and check it computes the same vectors.

// The allocator the services embed with (crates/platform sets it for every process that
// links it): measure the model as query-api and the projectors run it.
use platform as _;
use std::time::Instant;

use embeddings::Embedder;
use embeddings::local::{LocalConfig, LocalEmbedder};

const CALL: usize = 32;

/// Chunks whose vectors `EMBED_BENCH_DUMP` records.
const DUMP_VECTORS: usize = 50;

const WORDS: [&str; 48] = [
    "conversation",
    "message",
    "tenant",
    "projection",
    "offset",
    "broker",
    "summary",
    "retry",
    "latency",
    "customer",
    "invoice",
    "shipment",
    "weather",
    "stadium",
    "analysis",
    "quarterly",
    "migration",
    "schema",
    "index",
    "vector",
    "search",
    "notification",
    "deadline",
    "meeting",
    "agreement",
    "budget",
    "release",
    "incident",
    "database",
    "replica",
    "failover",
    "timeout",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "with",
    "after",
    "before",
    "because",
    "was",
    "is",
    "will",
    "never",
    "quickly",
    "café",
];

/// A deterministic pseudo-random generator (xorshift): varied text without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A chunk of 80-160 words in sentences: about 100-200 WordPiece tokens.
fn chunk(rng: &mut Rng) -> String {
    let words = 80 + rng.below(81);
    let mut text = String::new();
    let mut sentence = 0;
    for _ in 0..words {
        let word = WORDS[rng.below(WORDS.len())];
        if sentence == 0 {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                text.extend(first.to_uppercase());
                text.push_str(chars.as_str());
            }
        } else {
            text.push(' ');
            text.push_str(word);
        }
        sentence += 1;
        if sentence > 6 && rng.below(4) == 0 {
            text.push_str(if rng.below(5) == 0 { "? " } else { ". " });
            sentence = 0;
        }
    }
    text.push('.');
    text
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|e| format!("N must be a number ({arg}): {e}"))?,
        None => 2000,
    };
    let config = LocalConfig {
        model_dir: std::env::var("EMBEDDING_MODEL_DIR")
            .map_err(|_| "EMBEDDING_MODEL_DIR is not set")?
            .into(),
    };
    let started = Instant::now();
    let model = LocalEmbedder::load(config).await?;
    println!("loaded {} in {:.2?}", model.model(), started.elapsed());

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let chunks: Vec<String> = (0..n).map(|_| chunk(&mut rng)).collect();
    let tokens: usize = chunks.iter().map(|c| model.token_spans(c).len()).sum();
    let dump = std::env::var_os("EMBED_BENCH_DUMP").map(std::path::PathBuf::from);
    if let Some(path) = &dump {
        write_dump(path, &chunks, &[])?;
    }
    println!(
        "{n} chunks, {:.0} tokens each on average",
        tokens as f64 / n.max(1) as f64
    );

    // Warm-up: the first pass allocates what later ones reuse.
    model.embed(&chunks[..CALL.min(n)]).await?;

    let mut dumped: Vec<Vec<f32>> = Vec::new();
    let started = Instant::now();
    for call in chunks.chunks(CALL) {
        let vectors = model.embed(call).await?;
        if dump.is_some() && dumped.len() < DUMP_VECTORS {
            dumped.extend(vectors.into_iter().take(DUMP_VECTORS - dumped.len()));
        }
    }
    let elapsed = started.elapsed();
    println!(
        "embedded {n} chunks in {elapsed:.2?}: {:.1} chunks/s, {:.0} tokens/s",
        n as f64 / elapsed.as_secs_f64(),
        tokens as f64 / elapsed.as_secs_f64()
    );
    if let Some(path) = &dump {
        write_dump(path, &chunks, &dumped)?;
        println!(
            "wrote {n} chunks and {} vectors to {}",
            dumped.len(),
            path.display()
        );
    }
    Ok(())
}

/// Writes `{"texts": chunks, "vectors": vectors}` to `path`.
fn write_dump(
    path: &std::path::Path,
    chunks: &[String],
    vectors: &[Vec<f32>],
) -> Result<(), Box<dyn std::error::Error>> {
    let json = serde_json::json!({ "texts": chunks, "vectors": vectors });
    std::fs::write(path, serde_json::to_vec(&json)?)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}
