//! Serving HTTP: one way for every binary to bind, shut down gracefully and report health.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;

/// Binds `addr` and serves `app` until `shutdown` resolves, finishing in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
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
/// PostgreSQL. `/metrics`: Prometheus text format.
pub fn health_routes(pool: PgPool, liveness: Liveness) -> Router {
    let metrics = crate::telemetry::metrics();
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .with_state(Health { pool, liveness })
        .route(
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
