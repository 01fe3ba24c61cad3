//! The OpenAPI document served at `/openapi.json`.

use platform::http::{BearerAuth, ProblemResponses};
use utoipa::OpenApi;

use super::{analytics, audit, keys, knowledge, live, notifications, reads, search, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "Threadline query API", description = "Read models with read-your-writes (`position`), live conversation streams (SSE), semantic search, webhook endpoints with their delivery ledger, and audit replays of event streams. Errors are application/problem+json with a stable `code`."),
    paths(
        reads::list_conversations,
        reads::get_conversation,
        reads::list_messages,
        reads::list_documents,
        live::conversation_stream,
        reads::get_document,
        knowledge::list_knowledge,
        knowledge::get_knowledge,
        knowledge::get_original,
        search::search,
        notifications::list,
        webhooks::list_endpoints,
        webhooks::get_endpoint,
        webhooks::list_messages,
        webhooks::list_attempts,
        analytics::usage,
        analytics::conversation,
        audit::tenant_events,
        audit::aggregate_events,
        audit::state,
        audit::chain,
        audit::verify,
        keys::subject_key,
        keys::pseudonym,
        audit::export_subject
    ),
    components(schemas(read_model::queries::ConversationView, read_model::queries::MessageView, read_model::queries::DocumentView, read_model::queries::KnowledgeView, read_model::queries::KnowledgeDocumentView, crate::audit::StateView, audit::ChainView, audit::ChainLink, audit::RecordedHead, keys::SubjectKeyView, keys::PseudonymView, search::SearchResults, search::SearchHit, search::HitSource, analytics::UsageReport, ::analytics::UsageRow, read_model::queries::ConversationSummary, read_model::queries::WebhookEndpointView, webhooks::EndpointView, webhooks::MessageStatus, webhook_ledger::MessageView, webhook_ledger::AttemptView, ::notifications::queries::InboxItem)),
    modifiers(&BearerAuth, &ProblemResponses)
)]
pub struct ApiDoc;
