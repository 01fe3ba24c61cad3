//! How command failures look to clients.

use axum::http::{StatusCode, header};
use platform::problem::Problem;

use commands::CommandError;
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
            },
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
                database_unavailable()
            }
            CommandError::Storage(reason) => {
                tracing::error!(%reason, "event store failure");
                Problem::internal()
            }
        }
    }
}

/// 503 `database_unavailable` with `Retry-After`: the database cannot be reached right now.
pub(crate) fn database_unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        "The database is unavailable",
    )
    .detail("the database cannot be reached right now; retry shortly")
    .retry_after(1)
}
