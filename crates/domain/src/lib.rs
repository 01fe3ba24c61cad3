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

/// An aggregate's event enum: each variant a contract event of the same name (the serde
/// form, externally tagged by event type, is `schemas::Event`'s, so what is stored is
/// what is published), with the `DomainEvent` and `From<_> for schemas::Event` every
/// aggregate needs. Attributes and doc comments before the name go on the enum.
macro_rules! aggregate_events {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        $(#[$meta])*
        pub enum $name {
            $($variant($variant),)+
        }

        impl cqrs_es::DomainEvent for $name {
            fn event_type(&self) -> String {
                schemas::Event::from(self.clone())
                    .event_type()
                    .as_str()
                    .to_owned()
            }

            fn event_version(&self) -> String {
                "1".to_owned()
            }
        }

        impl From<$name> for schemas::Event {
            fn from(e: $name) -> Self {
                match e {
                    $($name::$variant(e) => e.into(),)+
                }
            }
        }
    };
}

/// `cqrs_es::Aggregate` for an aggregate whose inherent `decide` turns a command into its
/// one event (or refuses it) and whose `evolve` applies an event: every aggregate here.
macro_rules! decided_aggregate {
    ($ty:ident, $name:literal, $command:ident, $event:ident) => {
        impl cqrs_es::Aggregate for $ty {
            const TYPE: &'static str = $name;
            type Command = $crate::Command<$command>;
            type Event = $event;
            type Error = $crate::DomainError;
            type Services = ();

            async fn handle(
                &mut self,
                command: Self::Command,
                _: &Self::Services,
                sink: &cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), Self::Error> {
                let event = self.decide(command)?;
                sink.write(event, self).await;
                Ok(())
            }

            fn apply(&mut self, event: Self::Event) {
                self.evolve(event);
            }
        }
    };
}

pub mod conversation;
pub mod document;
pub mod inbox;
pub mod knowledge;
pub mod state;
pub mod subject;
mod validate;
pub mod webhook;

use chrono::{DateTime, Utc};
use thiserror::Error;

pub use access::{Reach, Resource, Scope};
pub use conversation::{Conversation, ConversationCommand, ConversationEvent};
pub use document::{
    Document, DocumentCommand, DocumentEvent, DocumentStatus, GeneratedDocument, ModelUsage,
    Transcript,
};
pub use inbox::{Inbox, InboxCommand, InboxEvent};
pub use knowledge::{Knowledge, KnowledgeCommand, KnowledgeEvent};
pub use schemas::Version;
pub use subject::{SubjectCommand, SubjectEvent, SubjectRecord};
pub use validate::{CONTENT_MAX, MODEL_MAX, TITLE_MAX};
pub use webhook::{WebhookCommand, WebhookEndpoint, WebhookEvent};

/// Who is acting: a subject of a tenant, and how much of the tenant they reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's `sub`.
    pub subject: String,
    pub reach: Reach,
}

/// Who asks, and under which expectations.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandContext {
    pub tenant_id: String,
    pub actor: Actor,
    pub expected_version: Option<Version>,
    pub at: DateTime<Utc>,
}

impl CommandContext {
    /// What the actor sees ([`access`] holds the rule).
    pub fn scope(&self) -> Scope<'_> {
        Scope::new(&self.tenant_id, &self.actor.subject, self.actor.reach)
    }
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
    /// The aggregate does not exist, belongs to another tenant, or is another member's
    /// (indistinguishable on purpose).
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
    /// No reply to the message is awaited: it has its reply (each user message gets at
    /// most one), or it is not a user message of this conversation awaiting the
    /// assistant. The state keeps only the messages awaiting a reply, so it cannot tell
    /// the two apart, and either way nothing is to be answered.
    #[error("the message awaits no reply")]
    NoReplyAwaited,
    /// A reply may be requested again only after the last attempt failed.
    #[error("the message's reply has not failed")]
    ReplyNotFailed,
    /// A document's generator answered for a document that is not waiting for it.
    #[error("the document is not waiting for its generator")]
    DocumentNotPending,
    /// The command would change nothing (an endpoint already in that state).
    #[error("{0}")]
    Unchanged(&'static str),
}

/// Checks that the aggregate exists for this tenant, that the actor sees it (started
/// by them, or they see the whole tenant), and that it is at the expected version.
pub(crate) fn check_access(
    exists: bool,
    owner: &str,
    started_by: Option<&str>,
    version: Version,
    ctx: &CommandContext,
) -> Result<(), DomainError> {
    if !exists || !ctx.scope().sees(&Resource::conversation(owner, started_by)) {
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
