//! The Anthropic Messages API: `POST {base}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`, body `{"model", "max_tokens", "system", "messages"}`
//! (system messages go to `system`, joined; `max_tokens` is required by the API and
//! defaults to [`AnthropicConfig::default_max_tokens`]), answered by `{"model",
//! "content": [{"type": "text", "text"}], "stop_reason", "usage": {"input_tokens",
//! "output_tokens"}}`. 529 (overloaded) is retryable like any 5xx. Streamed
//! (`"stream": true`): the server-sent events `message_start` (model, input tokens),
//! `content_block_delta` (`text_delta` pieces), `message_delta` (stop reason, output
//! tokens), `message_stop`, and `error`. One call is one request; the router retries.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::http::{self, Parsed, WireMessage, malformed};
use crate::{
    ChatProvider, ChatRequest, Completion, Deltas, FinishReason, ProviderError, Role, Secret, Usage,
};

/// The Anthropic API itself, when no URL is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version this client speaks.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` when the request sets none (the API requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct AnthropicConfig {
    /// The configured provider name (what routes list).
    pub name: String,
    /// The API's server, `https://api.anthropic.com`; `…/v1` and the whole endpoint
    /// (`…/v1/messages`) are understood too.
    pub base_url: String,
    pub model: String,
    /// Sent as `x-api-key`.
    pub api_key: Option<Secret>,
    /// `max_tokens` when the request sets none.
    pub default_max_tokens: u32,
    /// The whole request, headers and body.
    pub timeout: Duration,
}

pub struct AnthropicProvider {
    config: AnthropicConfig,
    endpoint: http::Endpoint,
}

impl std::fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AnthropicProvider {
    pub fn new(config: AnthropicConfig) -> Result<Self, ProviderError> {
        let endpoint = http::Endpoint::new(
            &config.base_url,
            &["v1", "messages"],
            http::Base::Prefix,
            config.timeout,
            config.api_key.clone(),
        )?;
        Ok(AnthropicProvider { config, endpoint })
    }

    /// The request body, or a refusal when there is nothing but system text to answer.
    fn body<'a>(&'a self, req: &'a ChatRequest) -> Result<RequestBody<'a>, ProviderError> {
        let system: Vec<&str> = req
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let messages: Vec<WireMessage<'a>> = req
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(WireMessage::from)
            .collect();
        if messages.is_empty() {
            return Err(ProviderError::Rejected(
                "the request has no user or assistant message".into(),
            ));
        }
        Ok(RequestBody {
            model: &self.config.model,
            max_tokens: req.max_tokens.unwrap_or(self.config.default_max_tokens),
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            messages,
            temperature: req.temperature,
            stream: false,
        })
    }

    fn headers(&self) -> Result<HeaderMap, ProviderError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        if let Some(key) = &self.config.api_key {
            headers.insert(
                HeaderName::from_static("x-api-key"),
                http::secret_header(key.expose())?,
            );
        }
        Ok(headers)
    }

    fn parse(&self, body: &[u8]) -> Result<Parsed, ProviderError> {
        #[derive(Deserialize)]
        struct Answer {
            model: Option<String>,
            content: Vec<Block>,
            stop_reason: Option<String>,
            usage: UsageBody,
        }
        #[derive(Deserialize)]
        struct Block {
            #[serde(rename = "type")]
            kind: String,
            text: Option<String>,
        }
        #[derive(Deserialize)]
        struct UsageBody {
            input_tokens: u32,
            output_tokens: u32,
        }

        let answer: Answer = serde_json::from_slice(body)
            .map_err(|e| malformed(format!("not a Messages API answer: {e}")))?;
        let text: String = answer
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect();
        let finish = stop_reason(answer.stop_reason.as_deref());
        http::require_text(&text, &finish)?;
        let model = answer
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| self.config.model.clone());
        let usage = Usage {
            prompt_tokens: answer.usage.input_tokens,
            completion_tokens: answer.usage.output_tokens,
        };
        Ok(Parsed {
            text,
            model: format!("anthropic/{model}"),
            usage,
            finish,
        })
    }
}

fn stop_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("end_turn" | "stop_sequence") => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_owned()),
        None => FinishReason::Other("unspecified".into()),
    }
}

#[derive(Serialize)]
struct RequestBody<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[async_trait::async_trait]
impl ChatProvider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn complete(&self, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        let body = self.body(req)?;
        let answer = self.endpoint.post(self.headers()?, &body).await?;
        let parsed = self.parse(&answer)?;
        Ok(parsed.completion(&self.config.name, started))
    }

    async fn stream(
        &self,
        req: &ChatRequest,
        deltas: &dyn Deltas,
    ) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        let body = RequestBody {
            stream: true,
            ..self.body(req)?
        };
        let parsed = match self.endpoint.post_streamed(self.headers()?, &body).await? {
            http::Answer::Events(events) => self.read_stream(events, deltas).await?,
            http::Answer::Whole(answer) => {
                let parsed = self.parse(&answer)?;
                deltas.delta(&parsed.text);
                parsed
            }
        };
        Ok(parsed.completion(&self.config.name, started))
    }
}

impl AnthropicProvider {
    /// A streamed answer: each text delta told to `deltas` as it comes.
    async fn read_stream(
        &self,
        mut events: http::SseReader,
        deltas: &dyn Deltas,
    ) -> Result<Parsed, ProviderError> {
        #[derive(Deserialize)]
        struct Event {
            #[serde(rename = "type")]
            kind: String,
            message: Option<Message>,
            delta: Option<Delta>,
            usage: Option<Counts>,
            error: Option<serde_json::Value>,
        }
        #[derive(Deserialize)]
        struct Message {
            model: Option<String>,
            usage: Option<Counts>,
        }
        #[derive(Deserialize)]
        struct Delta {
            #[serde(rename = "type")]
            kind: Option<String>,
            text: Option<String>,
            stop_reason: Option<String>,
        }
        #[derive(Deserialize)]
        struct Counts {
            input_tokens: Option<u32>,
            output_tokens: Option<u32>,
        }

        let mut text = String::new();
        let mut model = None;
        let mut usage = Usage::default();
        let mut finish = None;
        let mut stopped = false;
        while let Some(sse) = events.next().await? {
            let event: Event = serde_json::from_str(&sse.data)
                .map_err(|e| malformed(format!("not a Messages API event: {e}")))?;
            match event.kind.as_str() {
                "message_start" => {
                    if let Some(m) = event.message {
                        model = m.model.filter(|m| !m.is_empty());
                        if let Some(counts) = m.usage {
                            usage.prompt_tokens = counts.input_tokens.unwrap_or(0);
                            usage.completion_tokens = counts.output_tokens.unwrap_or(0);
                        }
                    }
                }
                "content_block_delta" => {
                    if let Some(d) = event.delta
                        && d.kind.as_deref() == Some("text_delta")
                        && let Some(piece) = d.text.filter(|t| !t.is_empty())
                    {
                        deltas.delta(&piece);
                        text.push_str(&piece);
                    }
                }
                "message_delta" => {
                    if let Some(d) = event.delta
                        && d.stop_reason.is_some()
                    {
                        finish = Some(stop_reason(d.stop_reason.as_deref()));
                    }
                    if let Some(counts) = event.usage
                        && let Some(output) = counts.output_tokens
                    {
                        usage.completion_tokens = output;
                    }
                }
                "message_stop" => {
                    stopped = true;
                    break;
                }
                "error" => {
                    let error = event.error.unwrap_or_default();
                    let message = error
                        .get("message")
                        .and_then(|m| m.as_str())
                        .unwrap_or("unspecified");
                    return Err(ProviderError::unavailable(format!(
                        "the provider answered an error mid-stream: {}",
                        message.chars().take(300).collect::<String>()
                    )));
                }
                // ping, content_block_start, content_block_stop, and event types to come.
                _ => {}
            }
        }
        if !stopped {
            return Err(malformed("the stream ended early"));
        }
        let finish = finish.unwrap_or(FinishReason::Other("unspecified".into()));
        http::require_text(&text, &finish)?;
        let model = model.unwrap_or_else(|| self.config.model.clone());
        Ok(Parsed {
            text,
            model: format!("anthropic/{model}"),
            usage,
            finish,
        })
    }
}
