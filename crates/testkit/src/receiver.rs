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
    /// The body as it came, byte for byte (what a signature covers).
    pub raw: String,
    /// Every header, names in lowercase.
    pub headers: HashMap<String, String>,
    /// When it arrived.
    pub at: std::time::Instant,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Answer for requests whose body contains the key's text, instead of 200.
    failing: HashMap<String, u16>,
    /// Answer for every request, instead of 200 (an outage).
    down: Option<u16>,
    /// Where `/redirect` sends its callers (307).
    redirect_to: Option<String>,
    /// How long each answer takes (a slow endpoint).
    delay: Option<std::time::Duration>,
    /// Requests being answered now, and the most there ever were at once.
    open: usize,
    most_open: usize,
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
    let delay = {
        let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.open += 1;
        inner.most_open = inner.most_open.max(inner.open);
        inner.delay
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let raw = String::from_utf8_lossy(&body).into_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = body.to_string();
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    inner.open -= 1;
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
        raw,
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        at: std::time::Instant::now(),
        status,
    });
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Sends the caller elsewhere (307), to see that it does not follow.
async fn redirect(State(inner): State<Arc<Mutex<Inner>>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let to = inner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .redirect_to
        .clone()
        .unwrap_or_else(|| "http://169.254.169.254/latest/meta-data/".to_owned());
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(axum::http::header::LOCATION, to)],
    )
        .into_response()
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/hook", post(receive))
            .route("/redirect", post(redirect))
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

    /// Answers every request only after `delay` (a slow endpoint).
    pub fn set_delay(&self, delay: Option<std::time::Duration>) {
        self.inner().delay = delay;
    }

    /// Where `/redirect` (at [`Receiver::redirect_url`]) sends its callers.
    pub fn redirect_to(&self, url: &str) {
        self.inner().redirect_to = Some(url.to_owned());
    }

    /// `http://127.0.0.1:<port>/redirect`: answers 307 to [`Receiver::redirect_to`].
    pub fn redirect_url(&self) -> String {
        self.url.replace("/hook", "/redirect")
    }

    /// Successful deliveries per value of `header`: what a receiver that de-duplicates
    /// by that header (`webhook-id`) sees once each.
    pub fn delivered_by(&self, header: &str) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for r in self.inner().received.iter().filter(|r| r.status < 300) {
            *out.entry(r.header(header).unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
        out
    }

    /// The most requests it was answering at once so far.
    pub fn most_at_once(&self) -> usize {
        self.inner().most_open
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
