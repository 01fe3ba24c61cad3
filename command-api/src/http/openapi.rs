//! The OpenAPI document served at `/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::commands;

#[derive(OpenApi)]
#[openapi(
    info(title = "Threadline command API", description = "Commands on conversations and documents. Errors are application/problem+json with a stable `code`."),
    paths(
        commands::start_conversation,
        commands::send_message,
        commands::rename_conversation,
        commands::end_conversation,
        commands::generate_document,
        commands::relay_status
    ),
    components(schemas(
        commands::StartConversation,
        commands::SendMessage,
        commands::RenameConversation,
        commands::EndConversation,
        commands::GenerateDocument,
        commands::CommandAccepted
    )),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
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
