//! Any OpenAI-compatible Chat Completions endpoint (OpenAI, Azure OpenAI's v1 API,
//! Ollama, vLLM, LM Studio, OpenRouter): `POST {base}/chat/completions` with
//! `{"model", "messages", "max_tokens", "temperature", "stream": false}` and a bearer key,
//! answered by `{"model", "choices": [{"message": {"content"}, "finish_reason"}],
//! "usage": {"prompt_tokens", "completion_tokens"}}`. Streamed (`"stream": true`, with
//! `stream_options.include_usage`): server-sent `chat.completion.chunk`s, each with
//! `choices[0].delta.content`, the last with `finish_reason` and one with `usage`, then
//! `data: [DONE]`; a server that answers one JSON body instead is read as such. One call
//! is one request; the router retries.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::http::{self, Parsed, WireMessage, malformed};
use crate::{
    ChatProvider, ChatRequest, Completion, Deltas, FinishReason, ProviderError, Secret, Usage,
    approximate_tokens,
};

/// The OpenAI API itself, when no URL is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiConfig {
    /// The configured provider name (what routes list).
    pub name: String,
    /// The API's base, e.g. `https://api.openai.com/v1`, `http://localhost:11434/v1`,
    /// `https://openrouter.ai/api/v1`; the server's root (`https://api.openai.com`) and
    /// the whole endpoint (`…/v1/chat/completions`) are understood too.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer`; servers without auth need none.
    pub api_key: Option<Secret>,
    /// The whole request, headers and body.
    pub timeout: Duration,
}

pub struct OpenAiProvider {
    config: OpenAiConfig,
    endpoint: http::Endpoint,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> Result<Self, ProviderError> {
        let endpoint = http::Endpoint::new(
            &config.base_url,
            &["v1", "chat", "completions"],
            http::Base::Versioned,
            config.timeout,
            config.api_key.clone(),
        )?;
        Ok(OpenAiProvider { config, endpoint })
    }

    fn body<'a>(&'a self, req: &'a ChatRequest, stream: bool) -> RequestBody<'a> {
        RequestBody {
            model: &self.config.model,
            messages: req.messages.iter().map(WireMessage::from).collect(),
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            max_tokens: req.max_tokens,
            temperature: req.temperature,
        }
    }

    fn headers(&self) -> Result<HeaderMap, ProviderError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &self.config.api_key {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                http::secret_header(&format!("Bearer {}", key.expose()))?,
            );
        }
        Ok(headers)
    }

    /// The token counts the provider reported, or an estimate from words.
    fn usage(req: &ChatRequest, text: &str, reported: Option<UsageBody>) -> Usage {
        match reported {
            Some(UsageBody {
                prompt_tokens: Some(prompt_tokens),
                completion_tokens: Some(completion_tokens),
            }) => Usage {
                prompt_tokens,
                completion_tokens,
            },
            _ => Usage {
                prompt_tokens: req
                    .messages
                    .iter()
                    .map(|m| approximate_tokens(&m.content))
                    .fold(0u32, u32::saturating_add),
                completion_tokens: approximate_tokens(text),
            },
        }
    }

    /// A streamed answer: each chunk's text told to `deltas` as it comes.
    async fn read_stream(
        &self,
        req: &ChatRequest,
        mut events: http::SseReader,
        deltas: &dyn Deltas,
    ) -> Result<Parsed, ProviderError> {
        #[derive(Deserialize)]
        struct Chunk {
            model: Option<String>,
            #[serde(default)]
            choices: Vec<ChunkChoice>,
            usage: Option<UsageBody>,
            error: Option<serde_json::Value>,
        }
        #[derive(Deserialize)]
        struct ChunkChoice {
            delta: Option<Delta>,
            finish_reason: Option<String>,
        }
        #[derive(Deserialize)]
        struct Delta {
            content: Option<String>,
            refusal: Option<String>,
        }

        let mut text = String::new();
        let mut model = None;
        let mut usage = None;
        let mut finish = None;
        let mut done = false;
        while let Some(event) = events.next().await? {
            if event.data.trim() == "[DONE]" {
                done = true;
                break;
            }
            let chunk: Chunk = serde_json::from_str(&event.data)
                .map_err(|e| malformed(format!("not a chat completion chunk: {e}")))?;
            if let Some(error) = chunk.error {
                return Err(ProviderError::unavailable(format!(
                    "the provider answered an error mid-stream: {}",
                    error_message(&error)
                )));
            }
            if model.is_none() {
                model = chunk.model.filter(|m| !m.is_empty());
            }
            if chunk.usage.is_some() {
                usage = chunk.usage;
            }
            let Some(choice) = chunk.choices.into_iter().next() else {
                continue;
            };
            if let Some(d) = choice.delta {
                if let Some(piece) = d.content.filter(|c| !c.is_empty()) {
                    deltas.delta(&piece);
                    text.push_str(&piece);
                } else if let Some(refusal) = d.refusal.filter(|r| !r.is_empty()) {
                    finish = Some(FinishReason::ContentFilter);
                    text.push_str(&refusal);
                }
            }
            if let Some(reason) = choice.finish_reason {
                let reason = finish_reason(Some(&reason));
                if finish != Some(FinishReason::ContentFilter) {
                    finish = Some(reason);
                }
            }
        }
        let Some(finish) = finish else {
            return Err(malformed(if done {
                "the stream ended without a finish reason"
            } else {
                "the stream ended early"
            }));
        };
        http::require_text(&text, &finish)?;
        let usage = Self::usage(req, &text, usage);
        let model = model.unwrap_or_else(|| self.config.model.clone());
        Ok(Parsed {
            text,
            model: format!("openai/{model}"),
            usage,
            finish,
        })
    }

    fn parse(&self, req: &ChatRequest, body: &[u8]) -> Result<Parsed, ProviderError> {
        #[derive(Deserialize)]
        struct Answer {
            model: Option<String>,
            #[serde(default)]
            choices: Vec<Choice>,
            usage: Option<UsageBody>,
            error: Option<serde_json::Value>,
        }
        #[derive(Deserialize)]
        struct Choice {
            message: Option<Message>,
            finish_reason: Option<String>,
        }
        #[derive(Deserialize)]
        struct Message {
            content: Option<String>,
            refusal: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(body)
            .map_err(|e| malformed(format!("not a chat completion: {e}")))?;
        let Some(choice) = answer.choices.into_iter().next() else {
            return Err(match answer.error {
                Some(error) => ProviderError::unavailable(format!(
                    "the provider answered an error: {}",
                    error_message(&error)
                )),
                None => malformed("no choices"),
            });
        };
        let mut finish = finish_reason(choice.finish_reason.as_deref());
        let message = choice
            .message
            .ok_or_else(|| malformed("the first choice has no message"))?;
        let text = match (message.content, message.refusal) {
            (Some(content), _) if !content.is_empty() => content,
            (_, Some(refusal)) => {
                finish = FinishReason::ContentFilter;
                refusal
            }
            (content, None) => content.unwrap_or_default(),
        };
        http::require_text(&text, &finish)?;
        let usage = Self::usage(req, &text, answer.usage);
        let model = answer
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| self.config.model.clone());
        Ok(Parsed {
            text,
            model: format!("openai/{model}"),
            usage,
            finish,
        })
    }
}

#[derive(Deserialize)]
struct UsageBody {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct RequestBody<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_owned()),
        None => FinishReason::Other("unspecified".into()),
    }
}

/// `error.message` of an error body, or the start of the body.
fn error_message(error: &serde_json::Value) -> String {
    let text = match error.get("message").and_then(|m| m.as_str()) {
        Some(message) => message.to_owned(),
        None => error.to_string(),
    };
    text.chars().take(300).collect()
}

#[async_trait::async_trait]
impl ChatProvider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn complete(&self, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        let body = self
            .endpoint
            .post(self.headers()?, &self.body(req, false))
            .await?;
        let parsed = self.parse(req, &body)?;
        Ok(parsed.completion(&self.config.name, started))
    }

    async fn stream(
        &self,
        req: &ChatRequest,
        deltas: &dyn Deltas,
    ) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        let answer = self
            .endpoint
            .post_streamed(self.headers()?, &self.body(req, true))
            .await?;
        let parsed = match answer {
            http::Answer::Events(events) => self.read_stream(req, events, deltas).await?,
            http::Answer::Whole(body) => {
                let parsed = self.parse(req, &body)?;
                deltas.delta(&parsed.text);
                parsed
            }
        };
        Ok(parsed.completion(&self.config.name, started))
    }
}
