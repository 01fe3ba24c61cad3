//! Any OpenAI-compatible `POST /v1/embeddings` (OpenAI, Ollama, vLLM, Hugging Face
//! text-embeddings-inference): `{"model", "input": [...]}` answered by
//! `{"data": [{"index", "embedding"}]}`. Batches, a timeout per request, and a few
//! retries with backoff on 429 and 5xx that honour `Retry-After`; after those the caller
//! sees [`EmbedError::Unavailable`] and retries later itself.

use std::ops::Range;
use std::time::Duration;

use common::backoff::{Backoff, retry_after};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::{EmbedError, Embedder, ModelId};

/// `EMBEDDING_OPENAI_URL` (the base, e.g. `https://api.openai.com/v1`; `/embeddings` is
/// appended), `EMBEDDING_MODEL`, `EMBEDDING_DIMENSION`, `EMBEDDING_API_KEY` (optional for
/// servers without auth), `EMBEDDING_BATCH` (default 64 inputs per request),
/// `EMBEDDING_TIMEOUT_MS` (default 30000), `EMBEDDING_RETRIES` (default 3).
/// Requests in flight at once to a remote embedding provider.
const PARALLEL_REQUESTS: usize = 16;

#[derive(Clone, PartialEq)]
pub struct OpenAiConfig {
    pub base_url: String,
    pub model: String,
    pub dimension: usize,
    pub api_key: Option<String>,
    pub batch: usize,
    pub timeout: Duration,
    pub retries: u32,
    /// Longest wait a `Retry-After` may ask for before the provider counts as unavailable.
    pub max_retry_after: Duration,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("dimension", &self.dimension)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

/// Longest wait a `Retry-After` may ask for before the provider counts as unavailable.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

pub struct OpenAiEmbedder {
    config: OpenAiConfig,
    model: ModelId,
    url: reqwest::Url,
    client: reqwest::Client,
}

impl OpenAiEmbedder {
    pub fn new(config: OpenAiConfig) -> Result<Self, EmbedError> {
        let base = config.base_url.trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}/embeddings"))
            .map_err(|e| EmbedError::Config(format!("EMBEDDING_OPENAI_URL: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| EmbedError::Config(e.to_string()))?;
        Ok(OpenAiEmbedder {
            model: ModelId {
                name: format!("openai/{}", config.model),
                dimension: config.dimension,
            },
            config,
            url,
            client,
        })
    }

    /// One request for one batch, retried on 429, 5xx and network errors.
    async fn batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait = match self.request(texts).await {
                Ok(vectors) => return Ok(vectors),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Retry { reason, after }) => {
                    if attempt > self.config.retries {
                        return Err(EmbedError::Unavailable(reason));
                    }
                    match after {
                        Some(after) if after > self.config.max_retry_after => {
                            return Err(EmbedError::Unavailable(format!(
                                "{reason} (asked to retry after {}s)",
                                after.as_secs()
                            )));
                        }
                        Some(after) => after,
                        None => backoff.next_delay(),
                    }
                }
            };
            tracing::debug!(
                attempt,
                wait_ms = wait.as_millis() as u64,
                "embedding provider busy, retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn request(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Attempt> {
        let mut request = self
            .client
            .post(self.url.clone())
            .json(&serde_json::json!({"model": self.config.model, "input": texts}));
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| Attempt::Retry {
            reason: format!("request failed: {e}"),
            after: None,
        })?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(Attempt::Retry {
                reason: format!("the provider answered {status}"),
                after: retry_after(response.headers()),
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Attempt::Final(EmbedError::Config(format!(
                "the provider answered {status}: check EMBEDDING_API_KEY"
            ))));
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(Attempt::Final(EmbedError::Rejected(format!(
                "the provider answered {status}: {}",
                body.chars().take(300).collect::<String>()
            ))));
        }
        let body = response.bytes().await.map_err(|e| Attempt::Retry {
            reason: format!("reading the answer failed: {e}"),
            after: None,
        })?;
        self.parse(&body, texts.len())
            .map_err(|reason| Attempt::Retry {
                reason,
                after: None,
            })
    }

    /// The vectors of an answer, in input order, checked: one per input, each of the
    /// model's dimension, finite. Anything else is a malformed answer.
    fn parse(&self, body: &[u8], inputs: usize) -> Result<Vec<Vec<f32>>, String> {
        #[derive(Deserialize)]
        struct Answer {
            data: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            index: usize,
            embedding: Vec<f32>,
        }
        let answer: Answer = serde_json::from_slice(body)
            .map_err(|e| format!("the provider's answer is not an embeddings response: {e}"))?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; inputs];
        for item in answer.data {
            if item.embedding.len() != self.model.dimension {
                return Err(format!(
                    "the provider returned {} dimensions, EMBEDDING_DIMENSION is {}",
                    item.embedding.len(),
                    self.model.dimension
                ));
            }
            if !item.embedding.iter().all(|x| x.is_finite()) {
                return Err("the provider returned a non-finite vector".into());
            }
            let slot = out
                .get_mut(item.index)
                .ok_or_else(|| format!("the provider answered for input {}", item.index))?;
            let mut v = item.embedding;
            crate::normalise(&mut v);
            *slot = Some(v);
        }
        out.into_iter()
            .enumerate()
            .map(|(i, v)| v.ok_or_else(|| format!("the provider left input {i} out")))
            .collect()
    }
}

enum Attempt {
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Final(EmbedError),
}

#[async_trait::async_trait]
impl Embedder for OpenAiEmbedder {
    /// Requests to a remote provider mostly wait on it: several at once.
    fn parallel_calls(&self) -> usize {
        PARALLEL_REQUESTS
    }

    fn model(&self) -> &ModelId {
        &self.model
    }

    fn max_tokens(&self) -> usize {
        // Counted with `approximate_spans`; real limits of such models are in the
        // thousands, so windows sized by this never reach them.
        512
    }

    fn token_spans(&self, text: &str) -> Vec<Range<usize>> {
        crate::chunk::approximate_spans(text)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.config.batch) {
            out.extend(self.batch(batch).await?);
        }
        Ok(out)
    }
}
