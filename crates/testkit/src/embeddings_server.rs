//! A real HTTP server standing in for an OpenAI-compatible embeddings provider
//! (`POST /v1/embeddings`). Its model is a bag of hashed words: texts sharing words get
//! similar unit vectors, so a search by keyword finds its source. The test scripts what
//! it answers next: outages (a status), throttling (429 with `Retry-After`), malformed
//! bodies, then normal answers again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The dimension of the server's vectors.
pub const DIMENSION: usize = 64;

/// One scripted answer, used instead of a normal one.
#[derive(Debug, Clone, PartialEq)]
pub enum Scripted {
    /// This status, with no usable body (an outage: 500, 502, 503).
    Status(u16),
    /// 429 Too Many Requests with `Retry-After: <seconds>`.
    Throttle(u64),
    /// 200 with a body that is not an embeddings answer.
    Malformed,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Scripted>,
    /// Requests answered normally, and in all.
    served: usize,
    requests: usize,
    inputs: usize,
}

/// The server; stops when dropped.
pub struct EmbeddingsServer {
    /// `http://127.0.0.1:<port>/v1`: the base URL a provider is configured with.
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
    server: JoinHandle<()>,
}

impl Drop for EmbeddingsServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The bag-of-words vector of a text: each lowercase word of 3+ letters adds 1 to a
/// dimension chosen by its hash; normalised.
pub fn bag_of_words(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; DIMENSION];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
    {
        let hash = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        v[(hash % DIMENSION as u64) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        v[0] = 1.0;
    }
    v
}

async fn embeddings(State(inner): State<Arc<Mutex<Inner>>>, body: axum::body::Bytes) -> Response {
    let next = {
        let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.requests += 1;
        inner.script.pop_front()
    };
    match next {
        Some(Scripted::Status(status)) => {
            return StatusCode::from_u16(status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                .into_response();
        }
        Some(Scripted::Throttle(seconds)) => {
            let mut response = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
            if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return response;
        }
        Some(Scripted::Malformed) => {
            return (
                StatusCode::OK,
                "{\"data\": [{\"index\": 0, \"embedding\": \"oops\"",
            )
                .into_response();
        }
        None => {}
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let Some(inputs) = request["input"].as_array() else {
        return (StatusCode::BAD_REQUEST, "input must be an array").into_response();
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": bag_of_words(text.as_str().unwrap_or_default())})
        })
        .collect();
    {
        let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.served += 1;
        inner.inputs += inputs.len();
    }
    axum::Json(json!({"object": "list", "data": data, "model": request["model"]})).into_response()
}

impl EmbeddingsServer {
    pub async fn start() -> EmbeddingsServer {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .with_state(inner.clone());
        let (base, server) = crate::serve(app).await;
        let base_url = format!("{base}/v1");
        EmbeddingsServer {
            base_url,
            inner,
            server,
        }
    }

    /// An OpenAI-compatible provider of `model` talking to this server (batches of 16,
    /// 5 s timeout, one retry).
    pub fn embedder(&self, model: &str) -> Arc<dyn embeddings::Embedder> {
        Arc::new(
            embeddings::openai::OpenAiEmbedder::new(embeddings::openai::OpenAiConfig {
                base_url: self.base_url.clone(),
                model: model.into(),
                dimension: DIMENSION,
                api_key: None,
                batch: 16,
                timeout: std::time::Duration::from_secs(5),
                retries: 1,
                max_retry_after: std::time::Duration::from_secs(5),
            })
            .expect("a provider of the test server"),
        )
    }

    /// Answers the next requests with `answers`, in order, then normally again.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.script.extend(answers);
    }

    /// Scripted answers not given yet.
    pub fn scripted_left(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .script
            .len()
    }

    /// Requests answered normally.
    pub fn served(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).served
    }

    /// Requests received, whatever the answer.
    pub fn requests(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .requests
    }
}
