//! How command failures look to clients.

use axum::http::{StatusCode, header};
use platform::problem::Problem;

use commands::{CommandError, IntakeError, WebhookError};
use domain::DomainError;

/// How a failed command looks to clients.
pub(crate) fn command_failed(e: CommandError) -> Problem {
    {
        use StatusCode as S;
        match e {
            CommandError::Domain(d) => match d {
                DomainError::NotFound => Problem::not_found(),
                DomainError::AlreadyExists => {
                    Problem::new(S::CONFLICT, "already_exists", "Already exists")
                }
                DomainError::VersionMismatch { expected, current } => Problem::new(
                    S::PRECONDITION_FAILED,
                    "version_mismatch",
                    "Version mismatch",
                )
                .detail(format!(
                    "If-Match expected version {expected}, the current version is {current}"
                ))
                .with("expected_version", expected.0)
                .with("current_version", current.0)
                .header(header::ETAG, &format!("\"{current}\"")),
                DomainError::Invalid { field, reason } => Problem::new(
                    S::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "Validation failed",
                )
                .detail(format!("{field} {reason}"))
                .with("field", field),
                DomainError::ConversationEnded => Problem::new(
                    S::CONFLICT,
                    "conversation_ended",
                    "The conversation has ended",
                ),
                DomainError::NothingToGenerateFrom => Problem::new(
                    S::CONFLICT,
                    "conversation_empty",
                    "The conversation has no messages to generate from",
                ),
                DomainError::NoReplyAwaited => Problem::new(
                    S::CONFLICT,
                    "no_reply_awaited",
                    "The message awaits no reply",
                )
                .detail(
                    "it has its reply, or it is not a user message of this conversation awaiting the assistant",
                ),
                DomainError::ReplyNotFailed => Problem::new(
                    S::CONFLICT,
                    "reply_not_failed",
                    "The message's reply has not failed",
                )
                .detail("a reply can be requested again only after the last one failed"),
                DomainError::Unchanged(what) => {
                    Problem::new(S::CONFLICT, "unchanged", "Nothing to change").detail(what)
                }
                DomainError::DocumentNotPending => Problem::new(
                    S::CONFLICT,
                    "document_not_pending",
                    "The document is not waiting for its generator",
                ),
            },
            CommandError::Webhook(w) => webhook_refused(w),
            CommandError::DataProtectionOff => Problem::new(
                S::CONFLICT,
                "data_protection_off",
                "Data protection is off",
            )
            .detail(
                "nothing is sealed without DATA_MASTER_KEY, so nothing can be erased by its key; \
                 set it in every service (docs/DATA-PROTECTION.md)",
            ),
            CommandError::EventTooLarge { bytes, max } => Problem::new(
                S::UNPROCESSABLE_ENTITY,
                "event_too_large",
                "The resulting event is too large",
            )
            .detail(format!(
                "the event would be {bytes} bytes; at most {max} are stored and published"
            ))
            .with("max_bytes", max),
            CommandError::Generator(reason) => {
                tracing::warn!(%reason, "document generator failed");
                Problem::new(
                    S::BAD_GATEWAY,
                    "generator_failed",
                    "Document generation failed",
                )
                .detail(reason)
            }
            CommandError::Intake(refused) => upload_refused(refused),
            CommandError::IdempotencyKeyReused => Problem::new(
                S::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
            )
            .detail("this Idempotency-Key was used for a different request"),
            CommandError::Contended(attempts) => {
                tracing::warn!(attempts, "aggregate stayed contended");
                Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "contended",
                    "Too many concurrent writers",
                )
                .detail("retry the request")
                .retry_after(1)
            }
            CommandError::Unavailable(reason) => {
                tracing::warn!(%reason, "event store unavailable");
                Problem::database_unavailable()
            }
            CommandError::Storage(reason) => {
                tracing::error!(%reason, "event store failure");
                Problem::internal()
            }
        }
    }
}

/// How a refused upload looks: 415 for a media type not taken, 413 for a file too large,
/// 422 for one that is empty, not what it claims, malformed, too complex to read within
/// the extractor's limits, or without text; 503 when the extractor cannot run here.
fn upload_refused(e: IntakeError) -> Problem {
    use StatusCode as S;
    let detail = e.to_string();
    let problem = match e {
        IntakeError::UnsupportedMediaType(_) => Problem::new(
            S::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "The file's media type is not accepted",
        )
        .with("accepted", domain::knowledge::MEDIA_TYPES.to_vec()),
        IntakeError::TooLarge { max, .. } => Problem::new(
            S::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "The file is too large",
        )
        .with("max_bytes", max),
        IntakeError::Empty => {
            Problem::new(S::UNPROCESSABLE_ENTITY, "file_empty", "The file is empty")
        }
        IntakeError::MediaTypeMismatch { .. } => Problem::new(
            S::UNPROCESSABLE_ENTITY,
            "media_type_mismatch",
            "The file does not match its media type",
        ),
        IntakeError::PdfWithoutText => Problem::new(
            S::UNPROCESSABLE_ENTITY,
            "pdf_without_text",
            "The PDF has no text",
        ),
        IntakeError::Unreadable => Problem::new(
            S::UNPROCESSABLE_ENTITY,
            "file_unreadable",
            "The file cannot be read",
        ),
        IntakeError::TooComplex(_) => Problem::new(
            S::UNPROCESSABLE_ENTITY,
            "file_too_complex",
            "The file is too complex to read",
        ),
        IntakeError::ExtractorUnavailable(reason) => {
            tracing::error!(%reason, "the text extractor cannot run");
            return Problem::new(
                S::SERVICE_UNAVAILABLE,
                "extraction_unavailable",
                "Files cannot be read at the moment",
            )
            .retry_after(30);
        }
    };
    problem.detail(detail)
}

/// A webhook endpoint refused: its URL (422 `url_refused`), webhooks off on this server
/// (503 `webhooks_not_configured`), or a secret that does not open (500, logged).
fn webhook_refused(e: WebhookError) -> Problem {
    use StatusCode as S;
    match e {
        WebhookError::UrlRefused(refused) => Problem::new(
            S::UNPROCESSABLE_ENTITY,
            "url_refused",
            "The endpoint URL is not allowed",
        )
        .detail(refused.to_string()),
        WebhookError::NotConfigured => Problem::new(
            S::SERVICE_UNAVAILABLE,
            "webhooks_not_configured",
            "Webhooks are not configured on this server",
        )
        .detail("set WEBHOOK_SECRET_KEY on command-api"),
        WebhookError::Seal(reason) => {
            tracing::error!(%reason, "a webhook secret does not seal or open");
            Problem::internal()
        }
    }
}
