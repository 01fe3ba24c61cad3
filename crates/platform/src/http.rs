//! Serving HTTP: one way for every binary to bind, shut down gracefully and report health.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;

/// Limits every server applies to its clients, so slow or idle ones cannot hold
/// connections: a client must send a request's headers within `header_read` (an idle
/// keep-alive connection is closed after it too), and get its whole request handled,
/// body included, within `request` (a streamed answer counts until its first byte; each
/// stream has its own limit). A body larger than `body` is refused from its
/// `Content-Length`, before it is read.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// `HTTP_HEADER_READ_TIMEOUT_MS` (default 10000).
    pub header_read: Duration,
    /// `HTTP_REQUEST_TIMEOUT_MS` (default 30000).
    pub request: Duration,
    /// The largest request body, in bytes (set per API).
    pub body: usize,
}

impl HttpLimits {
    pub fn from_env(body: usize) -> Result<Self, crate::config::ConfigError> {
        use crate::config::parse_or;
        Ok(HttpLimits {
            header_read: Duration::from_millis(parse_or("HTTP_HEADER_READ_TIMEOUT_MS", 10_000)?),
            request: Duration::from_millis(parse_or("HTTP_REQUEST_TIMEOUT_MS", 30_000)?),
            body,
        })
    }

    /// Wraps `app` in the request timeout (408 `request_timeout`) and the body limit
    /// (413 before reading a declared oversize body).
    pub fn apply(&self, app: Router) -> Router {
        let timeout = self.request;
        app.layer(axum::middleware::from_fn(
            move |req, next: axum::middleware::Next| timed(timeout, req, next),
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(self.body))
    }
}

async fn timed(
    limit: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => crate::problem::Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "Request timeout",
        )
        .detail(format!(
            "the request was not received and handled within {} ms",
            limit.as_millis()
        ))
        .header(axum::http::header::CONNECTION, "close")
        .into_response(),
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish (the process's grace period bounds how long). Connections
/// are HTTP/1.1; the header-read timeout of `limits` applies to every one.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper::server::conn::http1::Builder;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let app = limits.apply(app);
    // HTTP/1.1: the header-read timeout covers a connection from its first moment (an
    // HTTP/2 sniffing server reads the preface with no timeout at all).
    let mut builder = Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = app
            .clone()
            .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A part of the process that must keep running for the process to be alive (a
/// projector's consumer loop, say). Once it has failed, `/healthz` answers 503, so an
/// orchestrator restarts a process that no longer does its work.
#[derive(Clone, Default)]
pub struct Liveness {
    failure: Arc<Mutex<Option<String>>>,
    /// What `/readyz` reports besides the database (a relay's state, say).
    details: Option<Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Liveness")
            .field("failure", &self.failure())
            .finish_non_exhaustive()
    }
}

impl Liveness {
    /// `/readyz` also shows `details()` (it informs; it does not make the process unready).
    pub fn with_details(
        mut self,
        details: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.details = Some(Arc::new(details));
        self
    }

    pub fn fail(&self, reason: impl Into<String>) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert_with(|| reason.into());
    }

    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Clone)]
struct Health {
    pool: PgPool,
    liveness: Liveness,
}

/// `/healthz`: the process is up and `liveness` has not failed. `/readyz`: it can reach
/// PostgreSQL. `/metrics`: Prometheus text format, when `expose_metrics`.
pub fn health_routes(pool: PgPool, liveness: Liveness, expose_metrics: bool) -> Router {
    let routes = Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .with_state(Health { pool, liveness });
    if !expose_metrics {
        return routes;
    }
    let metrics = crate::telemetry::metrics();
    routes.route(
        "/metrics",
        get(move || std::future::ready(metrics.render())),
    )
}

async fn alive(State(health): State<Health>) -> impl IntoResponse {
    match health.liveness.failure() {
        None => (StatusCode::OK, axum::Json(json!({"status": "ok"}))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "failed", "reason": reason})),
        ),
    }
}

async fn ready(State(health): State<Health>) -> impl IntoResponse {
    if let Some(reason) = health.liveness.failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "failed", "reason": reason})),
        );
    }
    match sqlx::query("SELECT 1").execute(&health.pool).await {
        Ok(_) => {
            let mut body = json!({"status": "ready"});
            if let (Some(details), Some(obj)) = (&health.liveness.details, body.as_object_mut()) {
                obj.insert("details".into(), details());
            }
            (StatusCode::OK, axum::Json(body))
        }
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "unavailable", "reason": "database unreachable"})),
            )
        }
    }
}

/// OpenAPI modifier declaring the `bearer` (JWT) security scheme the paths refer to.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
    }
}
