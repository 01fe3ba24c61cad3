//! The Knowledge aggregate: a document of the tenant's knowledge base, added from a file
//! and later removed. The text comes extracted (the command service reads the file and
//! stores the original); the aggregate checks it and decides.

use schemas::{KnowledgeDocumentAdded, KnowledgeDocumentRemoved};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::validate::{self, TITLE_MAX};
use super::{Command, DomainError, Version, check_access};

/// The longest text a knowledge document may carry, in characters: its event must stay
/// well under the contract's size limit.
pub const KNOWLEDGE_TEXT_MAX: usize = 400_000;

/// The media types the knowledge base takes.
pub const MEDIA_TYPES: [&str; 3] = ["text/plain", "text/markdown", "application/pdf"];

#[derive(Debug, Clone, PartialEq)]
pub enum KnowledgeCommand {
    Add {
        knowledge_id: Uuid,
        title: String,
        media_type: String,
        /// Hex SHA-256 of the original bytes (stored by the service, outside the event).
        sha256: String,
        size_bytes: u64,
        text: String,
    },
    Remove,
}

aggregate_events!(
    // The contract's events as they are (one per aggregate command, moved once): boxing the
    // large one would buy nothing.
    #[expect(clippy::large_enum_variant)]
    KnowledgeEvent {
        KnowledgeDocumentAdded,
        KnowledgeDocumentRemoved,
    }
);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Knowledge {
    pub id: Option<Uuid>,
    pub tenant_id: String,
    pub title: String,
    pub sha256: String,
    pub removed: bool,
    pub version: Version,
}

decided_aggregate!(Knowledge, "knowledge", KnowledgeCommand, KnowledgeEvent);

impl Knowledge {
    /// The state after `event` (the aggregate's `apply`).
    fn evolve(&mut self, event: KnowledgeEvent) {
        self.version.0 += 1;
        match event {
            KnowledgeEvent::KnowledgeDocumentAdded(e) => {
                self.id = Some(e.knowledge_id);
                self.tenant_id = e.tenant_id;
                self.title = e.title;
                self.sha256 = e.sha256;
            }
            KnowledgeEvent::KnowledgeDocumentRemoved(_) => self.removed = true,
        }
    }
}

impl Knowledge {
    /// The event a command produces, or why it is refused. Pure: no I/O.
    pub fn decide(
        &self,
        command: Command<KnowledgeCommand>,
    ) -> Result<KnowledgeEvent, DomainError> {
        let Command { ctx, body } = command;
        match body {
            KnowledgeCommand::Add {
                knowledge_id,
                title,
                media_type,
                sha256,
                size_bytes,
                text,
            } => {
                if self.id.is_some() {
                    return Err(DomainError::AlreadyExists);
                }
                if !MEDIA_TYPES.contains(&media_type.as_str()) {
                    return Err(DomainError::Invalid {
                        field: "media_type",
                        reason: format!("must be one of {}", MEDIA_TYPES.join(", ")),
                    });
                }
                if text.trim().is_empty() {
                    return Err(DomainError::Invalid {
                        field: "text",
                        reason: "the file has no text".into(),
                    });
                }
                let chars = text.chars().count();
                if chars > KNOWLEDGE_TEXT_MAX {
                    return Err(DomainError::Invalid {
                        field: "text",
                        reason: format!(
                            "the file's text is {chars} characters, at most {KNOWLEDGE_TEXT_MAX} allowed"
                        ),
                    });
                }
                Ok(KnowledgeEvent::KnowledgeDocumentAdded(
                    KnowledgeDocumentAdded {
                        sealed: None,
                        knowledge_id,
                        tenant_id: ctx.tenant_id,
                        title: validate::text("title", &title, TITLE_MAX, false)?,
                        media_type,
                        sha256,
                        size_bytes: i64::try_from(size_bytes).unwrap_or(i64::MAX),
                        // PostgreSQL's jsonb cannot store NUL; a text file with one is not text.
                        text: text.replace('\u{0}', ""),
                        added_by: Some(ctx.actor.subject),
                        added_at: ctx.at,
                    },
                ))
            }
            KnowledgeCommand::Remove => {
                check_access(self.id.is_some(), &self.tenant_id, None, self.version, &ctx)?;
                let knowledge_id = self.id.ok_or(DomainError::NotFound)?;
                if self.removed {
                    return Err(DomainError::NotFound);
                }
                Ok(KnowledgeEvent::KnowledgeDocumentRemoved(
                    KnowledgeDocumentRemoved {
                        knowledge_id,
                        removed_at: ctx.at,
                    },
                ))
            }
        }
    }
}
