//! How command failures look to clients.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use platform::problem::Problem;

use crate::domain::DomainError;
use crate::service::CommandError;

pub struct ApiError(pub Problem);

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        ApiError(p)
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        use StatusCode as S;
        let p = match e {
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
                .with("current_version", current.0),
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
                DomainError::Generator(reason) => {
                    tracing::warn!(%reason, "document generator failed");
                    Problem::new(
                        S::BAD_GATEWAY,
                        "generator_failed",
                        "Document generation failed",
                    )
                    .detail(reason)
                }
            },
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
            }
            CommandError::Storage(reason) => {
                tracing::error!(%reason, "event store failure");
                Problem::internal()
            }
        };
        ApiError(p)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let current = self.0.extra.get("current_version").and_then(|v| v.as_u64());
        let retry = self.0.code == "contended";
        let mut response = self.0.into_response();
        if let Some(v) = current.and_then(|v| HeaderValue::from_str(&format!("\"{v}\"")).ok()) {
            response.headers_mut().insert(header::ETAG, v);
        }
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
