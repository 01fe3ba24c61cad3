//! The REST surface: `/v1` reads, `/v1/search`, `/v1/audit` replays, `/openapi.json`, Swagger UI at
//! `/docs`, health and metrics.

mod analytics;
mod audit;
mod keys;
mod knowledge;
pub mod live;
mod notifications;
mod openapi;
mod reads;
mod search;
mod webhooks;

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

/// Largest request body: reads take their input from the path and the query.
pub const BODY_LIMIT: usize = 16 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub reads: Arc<Reads>,
    /// The event store, read through its one reader (audit folds, position tokens).
    pub events: event_store::Reader,
    /// Semantic search over the embeddings projector's index.
    pub search: Arc<semantic_index::Search>,
    pub auth: Arc<Authenticator>,
    /// Rate limits, CORS, which operational routes are served.
    pub edge: platform::edge::EdgeConfig,
    /// Longest a read waits for its `position` (`READ_WAIT_MAX_MS`, default 3000).
    pub read_wait_max: Duration,
    /// Longest an audit stream runs before it ends with a resumable
    /// `stream_time_limit` line (`AUDIT_STREAM_MAX_SECS`, default 600).
    pub stream_max: Duration,
    /// Audit streams open at once (`AUDIT_STREAMS_MAX`, default 32); one more is a 503.
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Usage figures of the analytics projection.
    pub analytics: Arc<::analytics::queries::Usage>,
    /// Live conversation streams per tenant (`LIVE_STREAMS_PER_TENANT`, default 100).
    pub live: Arc<live::LiveStreams>,
    /// The projections' commit announcements: reads waiting on a `position` and live
    /// streams wake on them. `None`: they poll.
    pub progress: Option<projection::progress::Announcements>,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

pub fn router(state: AppState) -> Router {
    let pool = state.reads.pool().clone();
    let (edge, auth) = (state.edge.clone(), state.auth.clone());
    let v1 = Router::new()
        .route("/conversations", get(reads::list_conversations))
        .route("/conversations/{id}", get(reads::get_conversation))
        .route("/conversations/{id}/messages", get(reads::list_messages))
        .route("/conversations/{id}/documents", get(reads::list_documents))
        .route("/conversations/{id}/stream", get(live::conversation_stream))
        .route("/documents/{id}", get(reads::get_document))
        .route("/knowledge", get(knowledge::list_knowledge))
        .route("/knowledge/{id}", get(knowledge::get_knowledge))
        .route("/knowledge/{id}/original", get(knowledge::get_original))
        .route("/search", get(search::search))
        .route("/notifications", get(notifications::list))
        .route("/webhooks/endpoints", get(webhooks::list_endpoints))
        .route("/webhooks/endpoints/{id}", get(webhooks::get_endpoint))
        .route(
            "/webhooks/endpoints/{id}/messages",
            get(webhooks::list_messages),
        )
        .route(
            "/webhooks/endpoints/{id}/attempts",
            get(webhooks::list_attempts),
        )
        .route("/analytics/usage", get(analytics::usage))
        .route(
            "/analytics/conversations/{id}",
            get(analytics::conversation),
        )
        .route("/audit/events", get(audit::tenant_events))
        .route("/audit/chain", get(audit::chain))
        .route("/keys/{subject}/{generation}", get(keys::subject_key))
        .route("/pseudonyms/{pseudonym}", get(keys::pseudonym))
        .route("/subjects/{subject}/export", get(audit::export_subject))
        .route("/audit/verify", get(audit::verify))
        .route(
            "/audit/{aggregate_type}/{id}/events",
            get(audit::aggregate_events),
        )
        .route("/audit/{aggregate_type}/{id}/state", get(audit::state))
        .method_not_allowed_fallback(|| async { platform::problem::Problem::method_not_allowed() })
        .with_state(state);
    let mut app = Router::new()
        .nest("/v1", v1)
        .merge(platform::http::health_routes(
            pool,
            platform::http::Liveness::default(),
            edge.expose_metrics,
        ));
    if edge.expose_docs {
        app = app.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::ApiDoc::openapi()));
    }
    let app = app
        .fallback(|| async { platform::problem::Problem::not_found().detail("no such route") })
        .method_not_allowed_fallback(|| async { platform::problem::Problem::method_not_allowed() });
    platform::edge::apply(app, &edge, auth)
        .layer(axum::middleware::from_fn(platform::context::propagate))
}

/// A time a client gave, if the database can store and compare it: years 1 to 9999
/// (RFC 3339's four digits; PostgreSQL's `timestamptz` goes further back, but not as far
/// as every value a parser accepts). Outside that, a 400 problem naming the parameter.
pub(crate) fn checked_time(
    name: &str,
    t: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Problem> {
    use chrono::Datelike;
    match t {
        Some(t) if !(1..=9999).contains(&t.year()) => Err(Problem::bad_request(
            "invalid_query",
            format!("{name} must be between the years 1 and 9999"),
        )),
        other => Ok(other),
    }
}

/// A database failure as clients see it: 503 `database_unavailable` with `Retry-After`
/// when the database cannot be reached (or is overloaded), else a logged 500.
/// A failed read of an aggregate's stream: the database's, or a corrupt row (500).
pub(crate) fn stream_failed(e: &event_store::StreamError) -> Problem {
    match e {
        event_store::StreamError::Database(e) => database_failed(e),
        corrupt => {
            tracing::error!(error = %corrupt, "a stored event does not read");
            Problem::internal()
        }
    }
}

pub(crate) fn database_failed(e: &sqlx::Error) -> Problem {
    if event_store::is_unavailable(e) {
        tracing::warn!(error = %e, "database unavailable");
        Problem::database_unavailable()
    } else {
        tracing::error!(error = %e, "read failed");
        Problem::internal()
    }
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
            ReadError::Database(e) => database_failed(&e),
        }
    }
}
