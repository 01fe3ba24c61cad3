//! LLM chat providers behind one trait, [`ChatProvider`] (chat messages in; text, token
//! usage, model, finish reason and latency out), and the [`router::Router`] that picks
//! among them. Providers, chosen by configuration ([`config::LlmConfig::from_settings`]):
//!
//! * `openai` ([`openai`]): any OpenAI-compatible `POST …/chat/completions` (OpenAI,
//!   Azure OpenAI's v1 API, Ollama, vLLM, LM Studio, OpenRouter).
//! * `anthropic` ([`anthropic`]): the Anthropic Messages API.
//! * `local` ([`local`], the default): offline and deterministic, answers extractively
//!   from the retrieved context, and says so in its model name.
//!
//! The router ([`router`]) owns what no provider should: named routes that are ordered
//! fallback chains, a timeout per attempt, retries with backoff honouring `Retry-After`
//! (a pause of that provider for every caller), each provider's limits ([`limits`]:
//! calls at once, requests and tokens per minute, queued rather than refused), a circuit
//! breaker per provider ([`breaker`]) and a per-tenant daily token budget ([`budget`]). Keys live in [`Secret`]s: never printed, never logged.
//!
//! Bad provider output (invalid JSON, no choices, a huge body, a stalled stream) ends as
//! a [`ProviderError`], never as a panic or a caller waiting forever.

pub mod anthropic;
pub mod breaker;
pub mod budget;
pub mod clock;
pub mod config;
mod http;
pub mod limits;
pub mod local;
pub mod openai;
pub mod router;
mod secret;

use std::time::Duration;

use thiserror::Error;
use uuid::Uuid;

pub use secret::Secret;

/// Who speaks in a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The role's name in the OpenAI and Anthropic wire formats.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::System,
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::User,
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// One passage of retrieved context (a search hit). Remote providers get it already
/// rendered into the messages by the caller; the `local` provider answers from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextItem {
    /// The message, document or knowledge document the passage comes from.
    pub source_id: Uuid,
    pub title: String,
    pub text: String,
    /// The retrieval score (higher is more relevant).
    pub score: f32,
}

/// What to complete.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// The most tokens the answer may have (`None`: the provider's default).
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub context: Vec<ContextItem>,
}

impl ChatRequest {
    /// The content of the last user message, if any: the question being asked.
    pub fn last_user_message(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
    }
}

/// Tokens a completion cost, as the provider counted them (or estimated from words when
/// it did not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl Usage {
    pub fn total(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.completion_tokens)
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// A natural end (or a stop sequence).
    Stop,
    /// The answer reached `max_tokens`: it is cut short.
    Length,
    /// The provider withheld or refused the answer.
    ContentFilter,
    /// Anything else, as the provider named it.
    Other(String),
}

/// An answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// The model that answered, prefixed by the provider kind: `openai/gpt-4o-mini`,
    /// `anthropic/claude-sonnet-4-5`, `local/extractive-v1`.
    pub model: String,
    /// The configured name of the provider that answered (`primary`, `local`, …).
    pub provider: String,
    pub usage: Usage,
    pub finish_reason: FinishReason,
    /// From sending the request to having parsed the answer.
    pub latency: Duration,
}

/// Why a provider gave no completion.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProviderError {
    /// The provider cannot answer now (429, 5xx, a connection failure, a malformed or
    /// oversized answer): retrying, later or elsewhere, may help.
    #[error("provider unavailable: {reason}")]
    Unavailable {
        reason: String,
        /// How long the provider asked the caller to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// No answer within the time allowed (a stalled connection or stream).
    #[error("provider gave no answer within {} ms", .after.as_millis())]
    TimedOut { after: Duration },
    /// The provider refuses this request (400, 404, 413, 422, …): sending it again will
    /// not help, another provider might take it.
    #[error("provider refused the request: {0}")]
    Rejected(String),
    /// The provider is misconfigured (a bad URL, a key it does not accept): fix the
    /// deployment.
    #[error("provider misconfigured: {0}")]
    Config(String),
}

impl ProviderError {
    /// Whether the same request to the same provider may succeed on a later try.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Unavailable { .. } | ProviderError::TimedOut { .. }
        )
    }

    /// An unavailability without a `Retry-After`.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        ProviderError::Unavailable {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// A chat model. Implementations are cheap to share (`Arc`) and safe to call from many
/// tasks; one call is one request, the router does the retrying.
#[async_trait::async_trait]
pub trait ChatProvider: Send + Sync {
    /// The configured name of this provider (what routes list).
    fn name(&self) -> &str;

    async fn complete(&self, req: &ChatRequest) -> Result<Completion, ProviderError>;

    /// [`ChatProvider::complete`], telling `deltas` each piece of the answer's text as it
    /// arrives (the pieces, joined, are the completion's text). A provider that cannot
    /// stream tells the whole text once.
    async fn stream(
        &self,
        req: &ChatRequest,
        deltas: &dyn Deltas,
    ) -> Result<Completion, ProviderError> {
        let completion = self.complete(req).await?;
        deltas.delta(&completion.text);
        Ok(completion)
    }
}

/// Where the pieces of an answer go as a provider streams it.
pub trait Deltas: Send + Sync {
    fn delta(&self, text: &str);
}

impl<F: Fn(&str) + Send + Sync> Deltas for F {
    fn delta(&self, text: &str) {
        self(text)
    }
}

/// Approximate tokens of a text, for providers that do not count them: its words.
pub fn approximate_tokens(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}
