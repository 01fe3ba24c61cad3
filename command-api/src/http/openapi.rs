//! The OpenAPI document served at `/openapi.json`.

use platform::http::{BearerAuth, ProblemResponses};
use utoipa::OpenApi;

use super::{commands, erasure, inbox, knowledge, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "Threadline command API", description = "Commands on conversations, documents, the knowledge base and webhook endpoints. Errors are application/problem+json with a stable `code`."),
    paths(
        commands::start_conversation,
        commands::send_message,
        commands::rename_conversation,
        commands::end_conversation,
        commands::request_reply,
        commands::generate_document,
        knowledge::add_knowledge,
        knowledge::remove_knowledge,
        inbox::mark_read,
        webhooks::create_endpoint,
        webhooks::update_endpoint,
        webhooks::rotate_secret,
        webhooks::disable_endpoint,
        webhooks::enable_endpoint,
        webhooks::delete_endpoint,
        webhooks::redeliver,
        commands::relay_status,
        commands::relay_redrive,
        commands::projection_redrive,
        erasure::erase_subject,
        erasure::erase_tenant,
        erasure::get_retention,
        erasure::set_retention
    ),
    components(schemas(
        commands::StartConversation,
        commands::SendMessage,
        commands::RenameConversation,
        commands::RequestReply,
        commands::EndConversation,
        commands::GenerateDocument,
        commands::CommandAccepted,
        inbox::MarkRead,
        webhooks::CreateEndpoint,
        webhooks::UpdateEndpoint,
        webhooks::RotateSecret,
        webhooks::DisableEndpoint,
        webhooks::EnableEndpoint,
        webhooks::Redeliver,
        webhooks::EndpointSecret,
        erasure::Erase,
        erasure::Erased,
        erasure::Retention,
        erasure::RetentionView
    )),
    modifiers(&BearerAuth, &ProblemResponses)
)]
pub struct ApiDoc;
