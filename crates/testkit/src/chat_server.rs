//! A real HTTP server standing in for an OpenAI-compatible chat provider
//! (`POST /v1/chat/completions`). It answers `Answer: <the last user message>` with token
//! usage, keeps every request body it received (to check what a prompt held), counts
//! calls, and can be taken down (every call answered with a status) and healed.

use std::sync::{Arc, Mutex};

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
    /// Every call is answered 200 with a body that is no chat completion.
    garbled: bool,
    requests: Vec<Value>,
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

async fn complete(State(inner): State<Arc<Mutex<Inner>>>, body: axum::body::Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (down, garbled) = {
        let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.requests.push(request.clone());
        (inner.down, inner.garbled)
    };
    if garbled {
        return (StatusCode::OK, "{\"choices\": [{\"message\": ").into_response();
    }
    if let Some(status) = down {
        return StatusCode::from_u16(status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }
    let question = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    axum::Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": format!("Answer: {question}")},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
    }))
    .into_response()
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
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call from now on is answered with `status` (500, 503, 429 …).
    pub fn go_down(&self, status: u16) {
        self.inner().down = Some(status);
    }

    /// Every call from now on is answered 200 with a truncated, invalid body.
    pub fn garble(&self) {
        self.inner().garbled = true;
    }

    pub fn heal(&self) {
        let mut inner = self.inner();
        inner.down = None;
        inner.garbled = false;
    }

    /// Calls received, whatever the answer.
    pub fn calls(&self) -> usize {
        self.inner().requests.len()
    }

    /// The request bodies received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.inner().requests.clone()
    }
}
