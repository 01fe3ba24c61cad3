//! A real HTTP server standing in for an OpenAI-compatible chat provider
//! (`POST /v1/chat/completions`). It answers `Answer: <the last user message>` with token
//! usage, keeps every request body it received (to check what a prompt held), counts
//! calls and how many were in flight at once, and can be scripted: an answer after a
//! delay (a real model's latency), every call answered with a status (an outage, a 429
//! with `Retry-After`), a garbled body, and, for `"stream": true`, server-sent chunks
//! spaced in time, or a stream that stalls after some chunks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

#[derive(Default)]
struct Inner {
    /// `Some(status)`: every call is answered with it.
    down: Option<u16>,
    /// Sent as `Retry-After` (seconds) with a `down` answer.
    retry_after: Option<u64>,
    /// Every call is answered 200 with a body that is no chat completion.
    garbled: bool,
    /// How long before an answer (or between two chunks of a stream).
    latency: Duration,
    /// A streamed answer's chunks (at least 1).
    chunks: usize,
    /// A stream sends this many chunks, then nothing more (and never ends).
    stall_after: Option<usize>,
    requests: Vec<Value>,
    /// Answers wait while this is held (see [`ChatServer::hold`]).
    gate: Option<Arc<tokio::sync::Semaphore>>,
    /// When each streamed chunk was handed to the connection.
    chunks_sent: Vec<std::time::Instant>,
    in_flight: usize,
    peak_in_flight: usize,
}

/// The server; stops when dropped.
pub struct ChatServer {
    /// `http://127.0.0.1:<port>/v1`: the base URL a provider is configured with.
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
    server: JoinHandle<()>,
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts a call in flight until it is answered or its client went away.
struct InFlight(Arc<Mutex<Inner>>);

impl InFlight {
    fn start(inner: &Arc<Mutex<Inner>>) -> Self {
        let mut i = lock(inner);
        i.in_flight += 1;
        i.peak_in_flight = i.peak_in_flight.max(i.in_flight);
        InFlight(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.0).in_flight -= 1;
    }
}

fn answer_to(request: &Value) -> String {
    let question = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    format!("Answer: {question}")
}

async fn complete(State(inner): State<Arc<Mutex<Inner>>>, body: axum::body::Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let in_flight = InFlight::start(&inner);
    let (down, retry_after, garbled, latency, chunks, stall_after) = {
        let mut i = lock(&inner);
        i.requests.push(request.clone());
        (
            i.down,
            i.retry_after,
            i.garbled,
            i.latency,
            i.chunks.max(1),
            i.stall_after,
        )
    };
    if garbled {
        return (StatusCode::OK, "{\"choices\": [{\"message\": ").into_response();
    }
    if let Some(status) = down {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return match retry_after {
            Some(secs) => (status, [("retry-after", secs.to_string())]).into_response(),
            None => status.into_response(),
        };
    }
    let gate = lock(&inner).gate.clone();
    if let Some(gate) = gate {
        // Closed by `release`: every held call goes on at once.
        let _ = gate.acquire().await;
    }
    let text = answer_to(&request);
    if request["stream"] == true {
        return stream(in_flight, request, text, latency, chunks, stall_after);
    }
    tokio::time::sleep(latency).await;
    drop(in_flight);
    axum::Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
    }))
    .into_response()
}

/// `text` as server-sent chat completion chunks, `latency` apart, then the usage and
/// `[DONE]` (or nothing more after `stall_after` chunks).
fn stream(
    in_flight: InFlight,
    request: Value,
    text: String,
    latency: Duration,
    chunks: usize,
    stall_after: Option<usize>,
) -> Response {
    let pieces = split(&text, chunks);
    let model = request["model"].clone();
    let inner = in_flight.0.clone();
    let body = async_stream(move |tx| async move {
        let _in_flight = in_flight;
        for (i, piece) in pieces.iter().enumerate() {
            if stall_after == Some(i) {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(latency).await;
            let chunk = json!({
                "id": "chatcmpl-test", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]
            });
            if tx.send(format!("data: {chunk}\n\n")).await.is_err() {
                return;
            }
            lock(&inner).chunks_sent.push(std::time::Instant::now());
        }
        let last = json!({
            "id": "chatcmpl-test", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        });
        let usage = json!({
            "id": "chatcmpl-test", "object": "chat.completion.chunk", "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
        });
        for event in [
            format!("data: {last}\n\n"),
            format!("data: {usage}\n\n"),
            "data: [DONE]\n\n".to_owned(),
        ] {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// `text` cut into `n` pieces of about equal length (at character boundaries; fewer only
/// when it has fewer characters).
fn split(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = n.clamp(1, chars.len().max(1));
    (0..n)
        .map(|i| {
            let (from, to) = (i * chars.len() / n, (i + 1) * chars.len() / n);
            chars[from..to].iter().collect()
        })
        .collect()
}

/// A body stream fed by `produce` through a channel.
fn async_stream<F, Fut>(
    produce: F,
) -> impl futures::Stream<Item = Result<String, std::convert::Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<String>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(tx));
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (Ok(item), rx))
    })
}

impl ChatServer {
    pub async fn start() -> ChatServer {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(inner.clone());
        let (base, server) = crate::serve(app).await;
        let base_url = format!("{base}/v1");
        ChatServer {
            base_url,
            inner,
            server,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Every call from now on is answered with `status` (500, 503, 429 …).
    pub fn go_down(&self, status: u16) {
        self.inner().down = Some(status);
    }

    /// Every call from now on is answered with `status` and `Retry-After: secs`.
    pub fn go_down_for(&self, status: u16, secs: u64) {
        let mut inner = self.inner();
        inner.down = Some(status);
        inner.retry_after = Some(secs);
    }

    /// Every call from now on is answered 200 with a truncated, invalid body.
    pub fn garble(&self) {
        self.inner().garbled = true;
    }

    pub fn heal(&self) {
        let mut inner = self.inner();
        inner.down = None;
        inner.retry_after = None;
        inner.garbled = false;
        inner.stall_after = None;
    }

    /// Answers come `latency` after the request (a stream's chunks each that far apart).
    pub fn set_latency(&self, latency: Duration) {
        self.inner().latency = latency;
    }

    /// A streamed answer comes in `chunks` chunks.
    pub fn set_chunks(&self, chunks: usize) {
        self.inner().chunks = chunks;
    }

    /// A streamed answer stops after `chunks` chunks and the connection stays open.
    pub fn stall_after(&self, chunks: usize) {
        self.inner().stall_after = Some(chunks);
    }

    /// From now on calls are not answered until [`ChatServer::release`]: they stay in
    /// flight, however long that takes.
    pub fn hold(&self) {
        self.inner().gate = Some(Arc::new(tokio::sync::Semaphore::new(0)));
    }

    /// Answers every held call (after its latency) and holds none from now on.
    pub fn release(&self) {
        if let Some(gate) = self.inner().gate.take() {
            gate.close();
        }
    }

    /// Calls received, whatever the answer.
    pub fn calls(&self) -> usize {
        self.inner().requests.len()
    }

    /// Calls being answered now.
    pub fn in_flight(&self) -> usize {
        self.inner().in_flight
    }

    /// The most calls that were being answered at once.
    pub fn peak_in_flight(&self) -> usize {
        self.inner().peak_in_flight
    }

    /// Starts counting the most calls at once afresh.
    pub fn reset_peak(&self) {
        let mut inner = self.inner();
        inner.peak_in_flight = inner.in_flight;
    }

    /// When each streamed chunk was handed to the connection, in order.
    pub fn chunks_sent(&self) -> Vec<std::time::Instant> {
        self.inner().chunks_sent.clone()
    }

    /// The request bodies received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.inner().requests.clone()
    }
}
