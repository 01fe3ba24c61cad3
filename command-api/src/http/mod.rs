//! The REST surface: `/v1` commands, `/openapi.json`, Swagger UI at `/docs`, health.

mod commands;
mod erasure;
mod errors;
mod inbox;
mod knowledge;
mod openapi;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{delete, get, post};
use platform::auth::Authenticator;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use ::commands::CommandService;

pub use platform::context::RequestContext;

/// Largest JSON request body accepted: a maximal message (32,768 characters of up to four
/// bytes each) plus JSON overhead. Uploads to the knowledge base have their own limit
/// (`KNOWLEDGE_MAX_BYTES`).
pub const BODY_LIMIT: usize = 192 * 1024;

/// The transport's body limit (`platform::http::HttpLimits::body`): the largest route's,
/// the knowledge upload's. JSON routes keep [`BODY_LIMIT`].
pub fn transport_body_limit(service: &CommandService) -> usize {
    BODY_LIMIT.max(service.knowledge_max_bytes())
}

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<CommandService>,
    pub auth: Arc<Authenticator>,
    /// Rate limits, CORS, which operational routes are served.
    pub edge: platform::edge::EdgeConfig,
    /// The relay's progress, when this process runs one.
    pub relay: Option<tokio::sync::watch::Receiver<relay::RelayStatus>>,
    /// The relay deployment's cursor name (`RELAY_NAME`): any replica may ask its active
    /// relay to re-drive parked events.
    pub relay_name: String,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

pub fn router(state: AppState) -> Router {
    let pool = state.service.pool().clone();
    let knowledge_max = state.service.knowledge_max_bytes();
    let (edge, auth) = (state.edge.clone(), state.auth.clone());
    // /readyz says how the relay is doing (stuck, parked, lag); commands are accepted
    // whatever it does, so it does not make the API unready.
    let relay = state.relay.clone();
    let liveness = platform::http::Liveness::default().with_details(
        move || serde_json::json!({ "relay": relay.as_ref().map(|r| r.borrow().clone()) }),
    );
    let v1 = Router::new()
        .route("/conversations", post(commands::start_conversation))
        .route("/conversations/{id}/messages", post(commands::send_message))
        .route(
            "/conversations/{id}/rename",
            post(commands::rename_conversation),
        )
        .route("/conversations/{id}/end", post(commands::end_conversation))
        .route(
            "/conversations/{id}/messages/{message_id}/reply",
            post(commands::request_reply),
        )
        .route(
            "/conversations/{id}/documents",
            post(commands::generate_document),
        )
        .route(
            "/knowledge",
            // A file, not JSON: its own limit, the configured largest upload.
            post(knowledge::add_knowledge).layer(DefaultBodyLimit::max(knowledge_max)),
        )
        .route("/knowledge/{id}", delete(knowledge::remove_knowledge))
        .route("/notifications/read", post(inbox::mark_read))
        .route("/webhooks/endpoints", post(webhooks::create_endpoint))
        .route(
            "/webhooks/endpoints/{id}",
            axum::routing::patch(webhooks::update_endpoint).delete(webhooks::delete_endpoint),
        )
        .route(
            "/webhooks/endpoints/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route(
            "/webhooks/endpoints/{id}/disable",
            post(webhooks::disable_endpoint),
        )
        .route(
            "/webhooks/endpoints/{id}/enable",
            post(webhooks::enable_endpoint),
        )
        .route(
            "/webhooks/endpoints/{id}/redeliver",
            post(webhooks::redeliver),
        )
        .route("/admin/relay", get(commands::relay_status))
        .route("/admin/relay/redrive", post(commands::relay_redrive))
        .route(
            "/admin/projections/{name}/redrive",
            post(commands::projection_redrive),
        )
        .route(
            "/admin/subjects/{subject}/erase",
            post(erasure::erase_subject),
        )
        .route("/admin/tenant/erase", post(erasure::erase_tenant))
        .route(
            "/admin/retention",
            get(erasure::get_retention).put(erasure::set_retention),
        )
        .method_not_allowed_fallback(|| async { platform::problem::Problem::method_not_allowed() })
        .with_state(state);
    let mut app = Router::new()
        .nest("/v1", v1)
        .merge(platform::http::health_routes(
            pool,
            liveness,
            edge.expose_metrics,
        ));
    if edge.expose_docs {
        app = app.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::ApiDoc::openapi()));
    }
    let app = app
        .fallback(|| async { platform::problem::Problem::not_found().detail("no such route") })
        .method_not_allowed_fallback(|| async { platform::problem::Problem::method_not_allowed() })
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    platform::edge::apply(app, &edge, auth)
        .layer(axum::middleware::from_fn(platform::context::propagate))
}
