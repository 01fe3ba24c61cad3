//! The REST surface: `/v1` reads, `/v1/audit` replays, `/openapi.json`, Swagger UI at
//! `/docs`, health and metrics.

mod audit;
mod openapi;
mod reads;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::routing::get;
use platform::auth::Authenticator;
use platform::problem::Problem;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use read_model::queries::{ReadError, Reads};

#[derive(Clone)]
pub struct AppState {
    pub reads: Arc<Reads>,
    pub auth: Arc<Authenticator>,
    /// Longest a read waits for its `position` (`READ_WAIT_MAX_MS`, default 3000).
    pub read_wait_max: Duration,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

pub fn router(state: AppState) -> Router {
    let pool = state.reads.pool().clone();
    let v1 = Router::new()
        .route("/conversations", get(reads::list_conversations))
        .route("/conversations/{id}", get(reads::get_conversation))
        .route("/conversations/{id}/messages", get(reads::list_messages))
        .route("/conversations/{id}/documents", get(reads::list_documents))
        .route("/documents/{id}", get(reads::get_document))
        .route("/audit/events", get(audit::tenant_events))
        .route(
            "/audit/{aggregate_type}/{id}/events",
            get(audit::aggregate_events),
        )
        .route("/audit/{aggregate_type}/{id}/state", get(audit::state))
        .with_state(state);
    Router::new()
        .nest("/v1", v1)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::ApiDoc::openapi()))
        .merge(platform::http::health_routes(
            pool,
            platform::http::Liveness::default(),
        ))
        .fallback(|| async { Problem::not_found().detail("no such route") })
        .layer(axum::middleware::from_fn(platform::context::propagate))
}

/// How a failed read looks to clients.
pub(crate) fn read_failed(e: ReadError) -> Problem {
    {
        match e {
            ReadError::NoReadModel => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "read_model_unavailable",
                "Read model unavailable",
            )
            .detail("the read-model projector has not built its tables yet")
            .retry_after(1),
            ReadError::Database(e) => {
                tracing::error!(error = %e, "read failed");
                Problem::internal()
            }
        }
    }
}
