//! Serving HTTP: one way for every binary to bind, shut down gracefully and report health.

use std::sync::atomic::{AtomicBool, Ordering};
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

/// The time limits of [`HttpLimits`], as settings.
#[derive(Debug, Clone, Copy, clap::Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpTimeouts {
    /// Milliseconds in which a request's headers must arrive; idle keep-alive connections
    /// close after it too.
    #[arg(long = "http-header-read-timeout-ms", env = "HTTP_HEADER_READ_TIMEOUT_MS", default_value = "10000", value_parser = crate::config::millis)]
    pub header_read: Duration,
    /// Milliseconds for a whole request (body included) until the answer starts, else 408
    /// `request_timeout` (the APIs; a projector's health server has no slow requests).
    #[arg(long = "http-request-timeout-ms", env = "HTTP_REQUEST_TIMEOUT_MS", default_value = "30000", value_parser = crate::config::millis)]
    pub request: Duration,
}

impl HttpLimits {
    /// The limits of `timeouts` with the largest body `body`.
    pub fn new(timeouts: HttpTimeouts, body: usize) -> Self {
        HttpLimits {
            header_read: timeouts.header_read,
            request: timeouts.request,
            body,
        }
    }

    /// Wraps `app` in the request timeout (408 `request_timeout`) and the body limit
    /// (413 before reading a declared oversize body), and closes the connection of any
    /// answer given before its body was read.
    pub fn apply(&self, app: Router) -> Router {
        let timeout = self.request;
        app.layer(axum::middleware::from_fn(
            move |req, next: axum::middleware::Next| timed(timeout, req, next),
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(self.body))
        .layer(axum::middleware::map_response(too_large_as_problem))
        .layer(axum::middleware::from_fn(close_if_body_unread))
    }
}

/// An answer given before its request's body was read to the end (a refusal on the
/// headers alone: 401, 404, 405, 413, 415, ...) says `Connection: close`. The server
/// cannot keep such a connection (the rest of the body would read as the next request)
/// and hyper closes it; without the header a client pools it and sends its next request
/// into a closing socket, which fails as an incomplete message.
async fn close_if_body_unread(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use hyper::body::Body as _;
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next
            .run(axum::extract::Request::from_parts(parts, body))
            .await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let body = axum::body::Body::new(WatchedBody {
        inner: body,
        read: read.clone(),
    });
    let mut response = next
        .run(axum::extract::Request::from_parts(parts, body))
        .await;
    if !read.load(Ordering::Acquire) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A request body that notes when it has been read to its end.
struct WatchedBody {
    inner: axum::body::Body,
    read: Arc<AtomicBool>,
}

impl hyper::body::Body for WatchedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The body limit's own 413 (a declared oversize body, refused unread) is plain text:
/// clients get the same problem document as from a route's limit.
async fn too_large_as_problem(response: axum::response::Response) -> axum::response::Response {
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE || is_problem {
        return response;
    }
    crate::problem::Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "The request body was refused",
    )
    .detail("the body is larger than this server accepts")
    .into_response()
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

/// OpenAPI modifier: every operation lists every answer the edge and the extractors can
/// give besides its own (problem documents with a stable `code`), and the `Problem`
/// schema they follow, so a client generated from the document, or a fuzzer checking it,
/// meets no undocumented status.
pub struct ProblemResponses;

impl utoipa::Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = ObjectBuilder::new()
            .description(Some(
                "RFC 9457 problem details; `code` is stable and meant for clients to branch on.",
            ))
            .property("type", ObjectBuilder::new().schema_type(Type::String))
            .property("title", ObjectBuilder::new().schema_type(Type::String))
            .property("status", ObjectBuilder::new().schema_type(Type::Integer))
            .property("code", ObjectBuilder::new().schema_type(Type::String))
            .property("detail", ObjectBuilder::new().schema_type(Type::String))
            .required("type")
            .required("title")
            .required("status")
            .required("code")
            .build();
        if let Some(components) = openapi.components.as_mut() {
            components.schemas.insert("Problem".into(), problem.into());
        }
        let answer = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        let common: &[(&str, &str)] = &[
            (
                "400",
                "Malformed input: a parameter, header or value out of range (`invalid_*`)",
            ),
            (
                "401",
                "No valid token (`unauthenticated`, `invalid_token`, `token_expired`)",
            ),
            ("403", "The token's roles do not allow it (`forbidden`)"),
            (
                "404",
                "Nothing of this tenant, visible to this caller, at that path (`not_found`)",
            ),
            (
                "405",
                "The route does not answer this method (`method_not_allowed`)",
            ),
            (
                "408",
                "The request was not received and handled in time (`request_timeout`)",
            ),
            ("413", "The body is larger than allowed (`body_too_large`)"),
            (
                "429",
                "Over a rate limit; see `Retry-After` (`rate_limited`)",
            ),
            ("500", "A defect; logged (`internal`)"),
            (
                "503",
                "A dependency is unavailable or the server is saturated; see `Retry-After` (`database_unavailable`, `auth_unavailable`, `position_not_reached`, `too_many_streams`, `contended`)",
            ),
        ];
        let with_body: &[(&str, &str)] = &[
            (
                "409",
                "The aggregate's state forbids it (`already_exists`, `conversation_ended`, `conversation_empty`)",
            ),
            (
                "412",
                "`If-Match` names another version (`version_mismatch`)",
            ),
            ("415", "The body is not JSON (`unsupported_media_type`)"),
            (
                "422",
                "The body is valid JSON but not a valid command (`invalid_body`, `validation_failed`, `idempotency_key_reused`, `event_too_large`)",
            ),
        ];
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                let extra = if has_body { with_body } else { &[] };
                for (status, description) in common.iter().chain(extra) {
                    responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| answer(description).into());
                }
            }
        }
    }
}
