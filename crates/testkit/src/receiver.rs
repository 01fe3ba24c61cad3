//! A real HTTP server standing in for a third-party endpoint (a webhook or notification
//! receiver): records every request, answers what the test tells it to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tokio::task::JoinHandle;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub idempotency_key: Option<String>,
    pub body: Value,
    /// What the receiver answered.
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Answer for requests whose body contains the key's text, instead of 200.
    failing: HashMap<String, u16>,
    /// Answer for every request, instead of 200 (an outage).
    down: Option<u16>,
}

/// The server; stops when dropped.
pub struct Receiver {
    /// `http://127.0.0.1:<port>/hook`
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    server: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = body.to_string();
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    let status = inner.down.unwrap_or_else(|| {
        inner
            .failing
            .iter()
            .find(|(needle, _)| text.contains(needle.as_str()))
            .map_or(200, |(_, status)| *status)
    });
    inner.received.push(Received {
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        status,
    });
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, inner, server }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers `status` to requests whose JSON body contains `needle`.
    pub fn fail_when(&self, needle: &str, status: u16) {
        self.inner().failing.insert(needle.to_owned(), status);
    }

    /// Answers every request with `status` (`None`: back to normal).
    pub fn set_down(&self, status: Option<u16>) {
        self.inner().down = status;
    }

    pub fn heal(&self) {
        let mut inner = self.inner();
        inner.failing.clear();
        inner.down = None;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner().received.clone()
    }

    /// Successful deliveries per idempotency key: what a receiver that de-duplicates by
    /// key sees once each.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for r in self.inner().received.iter().filter(|r| r.status < 300) {
            *out.entry(r.idempotency_key.clone().unwrap_or_default())
                .or_insert(0) += 1;
        }
        out
    }
}
