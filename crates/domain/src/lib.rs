//! The write model: aggregates (cqrs-es), their commands, and the rules they enforce.
//!
//! Pure: no I/O, no clock, no randomness. Ids and times come in with the command, and a
//! generated document's text is produced outside the aggregate (by the command service,
//! through a generator that may call an LLM) and handed to it in the command.
//!
//! Events are the contract types of the `schemas` crate, so what is stored is exactly
//! what is published. Every command carries a [`CommandContext`]: the tenant from the
//! caller's token, the version the caller expects, and the time of acceptance.
//! [`state`] is the public view of an aggregate (what the audit API shows).

pub mod conversation;
pub mod document;
pub mod state;
mod validate;

use chrono::{DateTime, Utc};
use thiserror::Error;

pub use conversation::{Conversation, ConversationCommand, ConversationEvent};
pub use document::{Document, DocumentCommand, DocumentEvent, GeneratedDocument, Transcript};
pub use schemas::Version;
pub use validate::{CONTENT_MAX, TITLE_MAX};

/// Who asks, and under which expectations.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandContext {
    pub tenant_id: String,
    pub expected_version: Option<Version>,
    pub at: DateTime<Utc>,
}

/// A command with its context: what the aggregates handle.
#[derive(Debug, Clone, PartialEq)]
pub struct Command<C> {
    pub ctx: CommandContext,
    pub body: C,
}

/// Why an aggregate refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// The aggregate does not exist, or belongs to another tenant (indistinguishable on purpose).
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("expected version {expected}, current version is {current}")]
    VersionMismatch { expected: Version, current: Version },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the conversation has ended")]
    ConversationEnded,
    #[error("the conversation has no messages to generate a document from")]
    NothingToGenerateFrom,
}

/// Checks that the aggregate exists for this tenant and is at the expected version.
pub(crate) fn check_access(
    exists: bool,
    owner: &str,
    version: Version,
    ctx: &CommandContext,
) -> Result<(), DomainError> {
    if !exists || owner != ctx.tenant_id {
        return Err(DomainError::NotFound);
    }
    match ctx.expected_version {
        Some(expected) if expected != version => Err(DomainError::VersionMismatch {
            expected,
            current: version,
        }),
        _ => Ok(()),
    }
}
