//! Embedding providers behind one trait, [`Embedder`], chosen by configuration
//! ([`EmbeddingConfig::from_env`]):
//!
//! * `local` (the default): all-MiniLM-L6-v2 run in-process from model files on disk
//!   ([`local`]); fully offline, nothing is downloaded at run time.
//! * `openai`: any OpenAI-compatible `POST /v1/embeddings` ([`openai`]).
//!
//! A model's [`ModelId`] (name and dimension) is part of an index's identity: vectors of
//! two models never share an index. [`chunk`] cuts texts into overlapping windows of
//! tokens that fit the model.

pub mod chunk;
pub mod local;
pub mod openai;

use std::ops::Range;
use std::sync::Arc;

use thiserror::Error;

/// Which model made a vector: its name and dimension. Vectors of different models are
/// not comparable, so an index belongs to one model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ModelId {
    /// The provider's model name, prefixed by the provider: `local/all-MiniLM-L6-v2`,
    /// `openai/text-embedding-3-small`.
    pub name: String,
    pub dimension: usize,
}

impl ModelId {
    /// A lowercase identifier naming the model in index and collection names:
    /// `local_all_minilm_l6_v2_384`.
    pub fn slug(&self) -> String {
        let mut slug: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        while slug.contains("__") {
            slug = slug.replace("__", "_");
        }
        format!("{}_{}", slug.trim_matches('_'), self.dimension)
    }
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} dimensions)", self.name, self.dimension)
    }
}

/// Why embedding failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EmbedError {
    /// The provider cannot answer now (down, timing out, 429, 5xx, a malformed answer):
    /// retry later; nothing is wrong with the input.
    #[error("embedding provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refuses the input (a 4xx other than 429): retrying will not help.
    #[error("embedding refused: {0}")]
    Rejected(String),
    /// The provider is misconfigured or its model files are missing or corrupt.
    #[error("embedding provider misconfigured: {0}")]
    Config(String),
}

/// An embedding model. Implementations are cheap to share (`Arc`) and safe to call from
/// many tasks; CPU-bound ones do their work off the async threads.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync + 'static {
    fn model(&self) -> &ModelId;

    /// The most tokens one input may have; [`chunk`] windows stay within it.
    fn max_tokens(&self) -> usize;

    /// Byte ranges of the tokens of `text`, in order (what chunking counts and cuts at).
    fn token_spans(&self, text: &str) -> Vec<Range<usize>>;

    /// One unit-length vector of [`ModelId::dimension`] per text, in order. A text longer
    /// than [`Embedder::max_tokens`] is embedded in windows whose vectors are averaged
    /// (and normalised again): never silently truncated.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;

    /// Calls of [`Embedder::embed`] worth making at once: 1 for a model that runs on this
    /// process's own cores (more would only share them), more for a remote provider,
    /// whose calls mostly wait.
    fn parallel_calls(&self) -> usize {
        1
    }
}

/// Which provider, from the environment.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingConfig {
    /// `EMBEDDING_PROVIDER=local` (default): `EMBEDDING_MODEL_DIR` holds the model files.
    Local(local::LocalConfig),
    /// `EMBEDDING_PROVIDER=openai`.
    OpenAi(openai::OpenAiConfig),
}

/// The embedding settings (embeddings-projector, assistant-projector and query-api read
/// them, and must embed with the same model).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Embeddings")]
pub struct EmbeddingSettings {
    /// `local` (the model in `EMBEDDING_MODEL_DIR`, run in this process) or `openai` (any
    /// OpenAI-compatible embeddings API).
    #[arg(long = "embedding-provider", env = "EMBEDDING_PROVIDER", default_value = "local", value_parser = ["local", "openai"])]
    pub provider: String,
    /// `local`: the directory with `model.safetensors`, `tokenizer.json` and `config.json`
    /// of all-MiniLM-L6-v2 (`dev/stack` sets it).
    #[arg(long = "embedding-model-dir", env = "EMBEDDING_MODEL_DIR")]
    pub model_dir: Option<std::path::PathBuf>,
    /// `openai`, required: the API's base URL, e.g. `https://api.openai.com/v1`, Ollama's
    /// `http://ollama:11434/v1` (`POST {url}/embeddings`).
    #[arg(long = "embedding-openai-url", env = "EMBEDDING_OPENAI_URL")]
    pub openai_url: Option<String>,
    /// `openai`, required: the model.
    #[arg(long = "embedding-model", env = "EMBEDDING_MODEL")]
    pub model: Option<String>,
    /// `openai`, required: the dimension of its vectors (part of the index's identity).
    #[arg(long = "embedding-dimension", env = "EMBEDDING_DIMENSION", value_parser = clap::value_parser!(u32).range(1..))]
    pub dimension: Option<u32>,
    /// `openai`: the bearer key (never logged).
    #[arg(
        long = "embedding-api-key",
        env = "EMBEDDING_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// `openai`: texts per request.
    #[arg(long = "embedding-batch", env = "EMBEDDING_BATCH", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// `openai`: milliseconds per request.
    #[arg(id = "embedding-timeout-ms", long = "embedding-timeout-ms", env = "EMBEDDING_TIMEOUT_MS", default_value = "30000", value_parser = common::config::millis)]
    pub timeout: std::time::Duration,
    /// `openai`: retries on 429, 5xx and timeouts (with backoff, honouring `Retry-After`).
    #[arg(
        long = "embedding-retries",
        env = "EMBEDDING_RETRIES",
        default_value_t = 3
    )]
    pub retries: u32,
}

impl TryFrom<EmbeddingSettings> for EmbeddingConfig {
    type Error = common::config::ConfigError;

    fn try_from(s: EmbeddingSettings) -> Result<Self, Self::Error> {
        use common::config::ConfigError::Missing;
        if s.provider == "local" {
            let model_dir = s.model_dir.ok_or(Missing {
                name: "EMBEDDING_MODEL_DIR",
            })?;
            return Ok(EmbeddingConfig::Local(local::LocalConfig { model_dir }));
        }
        Ok(EmbeddingConfig::OpenAi(openai::OpenAiConfig {
            base_url: s.openai_url.ok_or(Missing {
                name: "EMBEDDING_OPENAI_URL",
            })?,
            model: s.model.ok_or(Missing {
                name: "EMBEDDING_MODEL",
            })?,
            dimension: s.dimension.ok_or(Missing {
                name: "EMBEDDING_DIMENSION",
            })? as usize,
            api_key: s.api_key,
            batch: s.batch as usize,
            timeout: s.timeout,
            retries: s.retries,
            max_retry_after: openai::MAX_RETRY_AFTER,
        }))
    }
}

impl EmbeddingConfig {
    pub fn from_env() -> Result<Self, common::config::ConfigError> {
        common::config::from_env::<EmbeddingSettings>()?.try_into()
    }

    /// The configured provider, ready to embed (the local model is loaded here).
    pub async fn build(self) -> Result<Arc<dyn Embedder>, EmbedError> {
        match self {
            EmbeddingConfig::Local(c) => Ok(Arc::new(local::LocalEmbedder::load(c).await?)),
            EmbeddingConfig::OpenAi(c) => Ok(Arc::new(openai::OpenAiEmbedder::new(c)?)),
        }
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x /= norm;
        }
    }
}

/// The mean of `vectors`, normalised: one vector for a text embedded in windows.
pub fn mean_normalised(vectors: &[Vec<f32>]) -> Vec<f32> {
    let Some(first) = vectors.first() else {
        return Vec::new();
    };
    let mut mean = vec![0.0; first.len()];
    for v in vectors {
        for (m, x) in mean.iter_mut().zip(v) {
            *m += x;
        }
    }
    normalise(&mut mean);
    mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_slug_is_a_lowercase_identifier_with_the_dimension() {
        let m = ModelId {
            name: "local/all-MiniLM-L6-v2".into(),
            dimension: 384,
        };
        assert_eq!(m.slug(), "local_all_minilm_l6_v2_384");
    }

    #[test]
    fn vectors_are_normalised_and_averaged() {
        let mut v = vec![3.0, 4.0];
        normalise(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let m = mean_normalised(&[vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert!((m[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((m[1] - m[0]).abs() < 1e-6);
    }
}
