//! A real HTTP server standing in for an LLM provider: answers each request with the
//! next scripted [`Reply`] (then with its default), counts calls and captures what it
//! was sent (path, headers, JSON body). Shared by the test binaries, each using part.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this JSON.
    Json(Value),
    /// This status and a small JSON error body.
    Status(u16),
    /// This status with a `Retry-After` header.
    RetryAfter(u16, &'static str),
    /// This status and this raw body.
    Raw(u16, String),
    /// Never answers (headers never come).
    Stall,
    /// 200 and the start of a body, then nothing more, ever.
    StallBody,
    /// 200 and a body of this many bytes, with `Content-Length`.
    Huge(usize),
    /// 200 and a body of this many bytes, chunked (no length announced).
    HugeChunked(usize),
    /// 200, `text/event-stream`: these events (each already `data: …` or
    /// `event: …\ndata: …`), one every `gap`; with `stall`, the stream then stays open
    /// and sends nothing more.
    Sse {
        events: Vec<String>,
        gap: Duration,
        stall: bool,
    },
}

/// One request the server got.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Value,
}

struct Inner {
    script: VecDeque<Reply>,
    default: Reply,
    captured: Vec<Captured>,
}

pub struct Server {
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// A server answering `default` to every request not scripted otherwise.
    pub async fn start(default: Reply) -> Server {
        let inner = Arc::new(Mutex::new(Inner {
            script: VecDeque::new(),
            default,
            captured: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            base_url,
            inner,
            task,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next requests get these answers, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner().script.extend(replies);
    }

    /// From now on, unscripted requests get this answer.
    pub fn set_default(&self, reply: Reply) {
        self.inner().default = reply;
    }

    /// Requests received so far.
    pub fn calls(&self) -> usize {
        self.inner().captured.len()
    }

    pub fn captured(&self) -> Vec<Captured> {
        self.inner().captured.clone()
    }
}

async fn answer(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.captured.push(Captured {
            uri: uri.to_string(),
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let default = inner.default.clone();
        inner.script.pop_front().unwrap_or(default)
    };
    let status = |code: u16| StatusCode::from_u16(code).expect("status");
    let json_response = |code: u16, body: String| {
        Response::builder()
            .status(status(code))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("response")
    };
    match reply {
        Reply::Json(v) => json_response(200, v.to_string()),
        Reply::Status(code) => json_response(
            code,
            json!({"error": {"type": "scripted", "message": format!("scripted {code}")}})
                .to_string(),
        ),
        Reply::RetryAfter(code, after) => {
            let mut r = json_response(code, json!({"error": {"message": "slow down"}}).to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, after.parse().expect("header"));
            r
        }
        Reply::Raw(code, body) => json_response(code, body),
        Reply::Stall => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            json_response(200, "{}".into())
        }
        Reply::StallBody => {
            let start = futures::stream::iter([Ok::<_, Infallible>(Bytes::from_static(
                b"{\"choices\": [",
            ))]);
            let body = Body::from_stream(start.chain(futures::stream::pending()));
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .expect("response")
        }
        Reply::Sse { events, gap, stall } => {
            let paced = futures::stream::iter(events).then(move |event| async move {
                tokio::time::sleep(gap).await;
                Ok::<_, Infallible>(Bytes::from(format!("{event}\n\n")))
            });
            let body = if stall {
                Body::from_stream(paced.chain(futures::stream::pending()))
            } else {
                Body::from_stream(paced)
            };
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(body)
                .expect("response")
        }
        Reply::Huge(bytes) => json_response(200, huge_json(bytes)),
        Reply::HugeChunked(bytes) => {
            let text = Bytes::from(huge_json(bytes));
            let chunks: Vec<Result<Bytes, Infallible>> = (0..text.len())
                .step_by(64 * 1024)
                .map(|i| Ok(text.slice(i..(i + 64 * 1024).min(text.len()))))
                .collect();
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .expect("response")
        }
    }
}

/// A well-formed answer (of either API) whose text makes it over `bytes` long.
fn huge_json(bytes: usize) -> String {
    format!(
        r#"{{"model": "m", "content": [{{"type": "text", "text": "short"}}], "stop_reason": "end_turn", "usage": {{"prompt_tokens": 1, "completion_tokens": 1, "input_tokens": 1, "output_tokens": 1}}, "choices": [{{"message": {{"role": "assistant", "content": "{}"}}, "finish_reason": "stop"}}]}}"#,
        "a".repeat(bytes)
    )
}

/// An OpenAI Chat Completions answer.
pub fn openai_answer(text: &str, prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
}

/// An Anthropic Messages answer.
pub fn anthropic_answer(text: &str, input_tokens: u32, output_tokens: u32) -> Value {
    json!({
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}
    })
}

/// An OpenAI chat completion streamed: one chunk per piece, the finish, the usage, then
/// `[DONE]`.
pub fn openai_stream(pieces: &[&str]) -> Vec<String> {
    let mut events: Vec<String> = pieces
        .iter()
        .map(|p| {
            format!(
                "data: {}",
                json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-x",
                       "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
            )
        })
        .collect();
    events.push(format!(
        "data: {}",
        json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-x",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    ));
    events.push(format!(
        "data: {}",
        json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-x", "choices": [],
               "usage": {"prompt_tokens": 11, "completion_tokens": 5}})
    ));
    events.push("data: [DONE]".into());
    events
}

/// An Anthropic message streamed, as its events.
pub fn anthropic_stream(pieces: &[&str]) -> Vec<String> {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "model": "claude-x",
                   "usage": {"input_tokens": 13, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    for p in pieces {
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
               "usage": {"output_tokens": 6}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}
