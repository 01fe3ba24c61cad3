//! What the remote providers share on the wire: an [`Endpoint`] (its URL under whatever
//! base was pasted, a client with a whole-request timeout that follows no redirects), one
//! JSON POST whose answer is classified by status (429, 408 and 5xx retryable with
//! `Retry-After`; 401/403 a misconfiguration; other 4xx a refusal) and whose body, or
//! stream of server-sent events, is read in chunks up to [`MAX_BODY`], never further.

use std::time::{Duration, Instant};

use common::backoff::retry_after;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Serialize;

use crate::{ChatMessage, Completion, FinishReason, ProviderError, Secret, Usage};

/// The largest answer body read; a longer one is a malformed answer.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The most of an error body read for its message, and the most of it quoted.
const MAX_ERROR_BODY: usize = 64 * 1024;
const QUOTED_ERROR_CHARS: usize = 300;

/// A client that gives up on any request (headers and body) after `timeout` and follows
/// no redirects (a provider that redirects is misconfigured, and a redirect could carry
/// the key elsewhere).
fn client(timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ProviderError::Config(format!("building the HTTP client: {e}")))
}

/// `base` with `segments` appended to its path (a query such as Azure's
/// `?api-version=` is kept).
pub(crate) fn endpoint(base: &str, segments: &[&str]) -> Result<Url, ProviderError> {
    let mut url = parse_base(base)?;
    url.path_segments_mut()
        .map_err(|()| ProviderError::Config(format!("the URL {base:?} cannot be a base")))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// How an API's clients treat a base URL with a path of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base {
    /// The path holds the API's version (OpenAI's clients: `…/v1`, OpenRouter's
    /// `…/api/v1`): only the rest of the endpoint is appended.
    Versioned,
    /// The path is a prefix before the version (Anthropic's clients): the whole endpoint
    /// is appended.
    Prefix,
}

/// The endpoint `path` (e.g. `["v1", "chat", "completions"]`) under `base`, whichever
/// form a user pasted: the server's root (`https://api.openai.com`), the API's base with
/// its version (`…/v1`, `…/openai/v1?api-version=…`), or the whole endpoint
/// (`…/v1/chat/completions`). A base that ends in part of the path gets the rest; another
/// path is read as `kind` says.
pub(crate) fn endpoint_under(base: &str, path: &[&str], kind: Base) -> Result<Url, ProviderError> {
    let url = parse_base(base)?;
    let have: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    // The longest tail of the base that is a head of the path: what is already there.
    let overlap = (0..=path.len().min(have.len()))
        .rev()
        .find(|&n| have[have.len() - n..] == path[..n])
        .unwrap_or(0);
    let rest = if overlap == 0 && !have.is_empty() && kind == Base::Versioned {
        &path[1..]
    } else {
        &path[overlap..]
    };
    endpoint(url.as_str(), rest)
}

fn parse_base(base: &str) -> Result<Url, ProviderError> {
    let url = Url::parse(base.trim())
        .map_err(|e| ProviderError::Config(format!("the URL {base:?} is invalid: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ProviderError::Config(format!(
            "the URL {base:?} is not http or https"
        )));
    }
    Ok(url)
}

/// A provider's endpoint: its URL, a client bounded by the provider's timeout, and the
/// key to scrub from any error text quoted from it. Both remote providers send through
/// one.
pub(crate) struct Endpoint {
    url: Url,
    client: reqwest::Client,
    timeout: Duration,
    secret: Option<Secret>,
}

/// What a streamed request got back.
pub(crate) enum Answer {
    /// Server-sent events, to be read as they arrive.
    Events(SseReader),
    /// One body: the server does not stream (it ignored `stream`).
    Whole(Vec<u8>),
}

impl Endpoint {
    /// The endpoint `path` under `base` (see [`endpoint_under`]).
    pub(crate) fn new(
        base: &str,
        path: &[&str],
        kind: Base,
        timeout: Duration,
        secret: Option<Secret>,
    ) -> Result<Self, ProviderError> {
        Ok(Endpoint {
            url: endpoint_under(base, path, kind)?,
            client: client(timeout)?,
            timeout,
            secret,
        })
    }

    /// POSTs `body` as JSON and returns the answer's body if the status is a success.
    pub(crate) async fn post<B: Serialize + ?Sized>(
        &self,
        headers: HeaderMap,
        body: &B,
    ) -> Result<Vec<u8>, ProviderError> {
        let response = self.send(headers, body).await?;
        read_capped(response, MAX_BODY, self.timeout).await
    }

    /// POSTs a request for a streamed answer: its events, or the one body a server that
    /// does not stream answers instead.
    pub(crate) async fn post_streamed<B: Serialize + ?Sized>(
        &self,
        headers: HeaderMap,
        body: &B,
    ) -> Result<Answer, ProviderError> {
        let response = self.send(headers, body).await?;
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if streamed {
            Ok(Answer::Events(SseReader::new(response, self.timeout)))
        } else {
            Ok(Answer::Whole(
                read_capped(response, MAX_BODY, self.timeout).await?,
            ))
        }
    }

    /// POSTs `body` as JSON and returns the response, its body unread, if its status is
    /// a success; other statuses are classified: 429, 408 and 5xx retryable with
    /// `Retry-After`, 401/403 a misconfiguration, other 4xx a refusal.
    async fn send<B: Serialize + ?Sized>(
        &self,
        headers: HeaderMap,
        body: &B,
    ) -> Result<reqwest::Response, ProviderError> {
        let timeout = self.timeout;
        let response = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .json(body)
            .send()
            .await
            .map_err(|e| transport_error(&e, timeout))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let after = retry_after(response.headers());
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            return Err(ProviderError::Unavailable {
                reason: format!("the provider answered {status}"),
                retry_after: after,
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            // The body of an authentication error may echo part of the key: not quoted.
            return Err(ProviderError::Config(format!(
                "the provider answered {status}: check the API key"
            )));
        }
        let quoted = match read_capped(response, MAX_ERROR_BODY, timeout).await {
            Ok(bytes) => quote(&bytes, self.secret.as_ref()),
            Err(_) => String::new(),
        };
        Err(ProviderError::Rejected(format!(
            "the provider answered {status}: {quoted}"
        )))
    }
}

/// One server-sent event: its `event:` name (empty when none) and its `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub event: String,
    pub data: String,
}

/// The server-sent events of a response, read as they arrive, [`MAX_BODY`] in all at
/// most (a longer stream is a malformed answer).
pub(crate) struct SseReader {
    response: reqwest::Response,
    buffer: Vec<u8>,
    read: usize,
    timeout: Duration,
    ended: bool,
}

impl SseReader {
    pub(crate) fn new(response: reqwest::Response, timeout: Duration) -> Self {
        SseReader {
            response,
            buffer: Vec::new(),
            read: 0,
            timeout,
            ended: false,
        }
    }

    /// The next event; `None` at the end of the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        loop {
            if let Some(event) = self.take_event() {
                return Ok(Some(event));
            }
            if self.ended {
                // What is left without a blank line after it is a last event.
                let rest = std::mem::take(&mut self.buffer);
                return Ok(parse_event(&rest));
            }
            match self
                .response
                .chunk()
                .await
                .map_err(|e| transport_error(&e, self.timeout))?
            {
                Some(chunk) => {
                    self.read += chunk.len();
                    if self.read > MAX_BODY {
                        return Err(malformed(format!(
                            "the stream is longer than {MAX_BODY} bytes"
                        )));
                    }
                    self.buffer.extend_from_slice(&chunk);
                }
                None => self.ended = true,
            }
        }
    }

    /// The first complete event of the buffer (one ended by a blank line), if any.
    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let end = blank_line(&self.buffer)?;
            let raw: Vec<u8> = self.buffer.drain(..end.1).collect();
            if let Some(event) = parse_event(&raw[..end.0]) {
                return Some(event);
            }
        }
    }
}

/// Where the first blank line is: (end of the event's text, end of the separator).
fn blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buffer.len() {
        if buffer[i] == b'\n' {
            let mut j = i + 1;
            if buffer.get(j) == Some(&b'\r') {
                j += 1;
            }
            if buffer.get(j) == Some(&b'\n') {
                return Some((i, j + 1));
            }
        }
        i += 1;
    }
    None
}

/// An event's lines: `event:` and `data:` fields (comments and other fields ignored);
/// `None` when it has no data.
fn parse_event(raw: &[u8]) -> Option<SseEvent> {
    let text = String::from_utf8_lossy(raw);
    let mut event = String::new();
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => event = value.to_owned(),
            "data" => data.push(value),
            _ => {}
        }
    }
    (!data.is_empty()).then(|| SseEvent {
        event,
        data: data.join("\n"),
    })
}

/// The body, read chunk by chunk and abandoned once it exceeds `limit`.
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, ProviderError> {
    let too_big = || {
        ProviderError::unavailable(format!(
            "malformed answer: the body is larger than {limit} bytes"
        ))
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(&e, timeout))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(e: &reqwest::Error, timeout: Duration) -> ProviderError {
    if e.is_timeout() {
        ProviderError::TimedOut { after: timeout }
    } else {
        // reqwest's message names the URL, never a header: no key in it.
        ProviderError::unavailable(format!("the request failed: {e}"))
    }
}

/// The start of an error body, as text, with the key (should it be echoed) scrubbed.
fn quote(bytes: &[u8], secret: Option<&Secret>) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = match secret {
        Some(s) if !s.expose().is_empty() => text.replace(s.expose(), "***"),
        _ => text.into_owned(),
    };
    text.chars().take(QUOTED_ERROR_CHARS).collect()
}

/// A chat message as both wire formats spell it.
#[derive(Serialize)]
pub(crate) struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

impl<'a> From<&'a ChatMessage> for WireMessage<'a> {
    fn from(m: &'a ChatMessage) -> Self {
        WireMessage {
            role: m.role.as_str(),
            content: &m.content,
        }
    }
}

/// A header value carrying a key, marked sensitive so HTTP tooling does not print it.
pub(crate) fn secret_header(value: &str) -> Result<HeaderValue, ProviderError> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| ProviderError::Config("the API key is not a valid header value".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// What a provider made of a successful answer, before it is a [`Completion`].
pub(crate) struct Parsed {
    pub text: String,
    pub model: String,
    pub usage: Usage,
    pub finish: FinishReason,
}

impl Parsed {
    /// The completion `provider` gave, `started` being when its request was sent.
    pub(crate) fn completion(self, provider: &str, started: Instant) -> Completion {
        Completion {
            text: self.text,
            model: self.model,
            provider: provider.to_owned(),
            usage: self.usage,
            finish_reason: self.finish,
            latency: started.elapsed(),
        }
    }
}

/// A parse failure of a success body, as the retryable error it is.
pub(crate) fn malformed(what: impl std::fmt::Display) -> ProviderError {
    ProviderError::unavailable(format!("malformed answer: {what}"))
}

/// An answer with no text is only acceptable when the provider withheld it.
pub(crate) fn require_text(text: &str, finish: &FinishReason) -> Result<(), ProviderError> {
    if text.trim().is_empty() && *finish != FinishReason::ContentFilter {
        return Err(malformed("the answer has no text"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_append_to_the_path_and_keep_the_query() {
        let u = endpoint("https://api.openai.com/v1/", &["chat", "completions"]).unwrap();
        assert_eq!(u.as_str(), "https://api.openai.com/v1/chat/completions");
        let u = endpoint(
            "https://x.openai.azure.com/openai/v1?api-version=preview",
            &["chat", "completions"],
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://x.openai.azure.com/openai/v1/chat/completions?api-version=preview"
        );
        let u = endpoint("https://api.anthropic.com", &["v1", "messages"]).unwrap();
        assert_eq!(u.as_str(), "https://api.anthropic.com/v1/messages");
        assert!(matches!(
            endpoint("not a url", &["x"]),
            Err(ProviderError::Config(_))
        ));
        assert!(matches!(
            endpoint("ftp://host/x", &["x"]),
            Err(ProviderError::Config(_))
        ));
    }

    #[test]
    fn endpoints_are_found_under_whatever_base_a_user_pasted() {
        let chat = ["v1", "chat", "completions"];
        for (base, want) in [
            (
                "https://api.openai.com",
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "https://api.openai.com/",
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "https://api.openai.com/v1",
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "https://api.openai.com/v1/",
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "https://api.openai.com/v1/chat/completions",
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "http://localhost:11434",
                "http://localhost:11434/v1/chat/completions",
            ),
            (
                "https://openrouter.ai/api/v1",
                "https://openrouter.ai/api/v1/chat/completions",
            ),
            (
                "https://x.openai.azure.com/openai/v1?api-version=preview",
                "https://x.openai.azure.com/openai/v1/chat/completions?api-version=preview",
            ),
        ] {
            assert_eq!(
                endpoint_under(base, &chat, Base::Versioned)
                    .unwrap()
                    .as_str(),
                want,
                "{base}"
            );
        }
        let messages = ["v1", "messages"];
        for (base, want) in [
            (
                "https://api.anthropic.com",
                "https://api.anthropic.com/v1/messages",
            ),
            (
                "https://api.anthropic.com/v1",
                "https://api.anthropic.com/v1/messages",
            ),
            (
                "https://api.anthropic.com/v1/messages",
                "https://api.anthropic.com/v1/messages",
            ),
            (
                "http://proxy:4000/anthropic",
                "http://proxy:4000/anthropic/v1/messages",
            ),
        ] {
            assert_eq!(
                endpoint_under(base, &messages, Base::Prefix)
                    .unwrap()
                    .as_str(),
                want,
                "{base}"
            );
        }
    }

    #[test]
    fn events_are_split_at_blank_lines_with_their_names_and_data() {
        let mut buffer =
            b"event: a\ndata: {\"x\":1}\n\n: comment\n\ndata: one\r\ndata: two\r\n\r\ndata: [DONE]"
                .to_vec();
        let mut events = Vec::new();
        while let Some(end) = blank_line(&buffer) {
            let raw: Vec<u8> = buffer.drain(..end.1).collect();
            events.extend(parse_event(&raw[..end.0]));
        }
        events.extend(parse_event(&buffer));
        let seen: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.event.as_str(), e.data.as_str()))
            .collect();
        assert_eq!(seen, [("a", "{\"x\":1}"), ("", "one\ntwo"), ("", "[DONE]")]);
    }

    #[test]
    fn quoted_error_text_is_short_and_has_no_key() {
        let key = Secret::new("sk-abc");
        let body = format!("bad key sk-abc {}", "x".repeat(1000));
        let q = quote(body.as_bytes(), Some(&key));
        assert!(q.starts_with("bad key *** x"));
        assert_eq!(q.chars().count(), QUOTED_ERROR_CHARS);
    }
}
