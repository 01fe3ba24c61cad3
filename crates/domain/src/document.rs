//! The Document aggregate: a business document generated from a conversation.
//!
//! The aggregate does not generate: the command service reads the conversation's
//! [`Transcript`], has a generator (an LLM, or the deterministic [`template`]) write the
//! [`GeneratedDocument`], and hands it to the aggregate in the command, which decides.

use schemas::{
    DocumentFormat, DocumentGenerated, DocumentGenerationFailed, DocumentKind, DocumentRequested,
    Generator, Role,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::validate::{self, TITLE_MAX};
use super::{Command, DomainError, Version, check_access};

/// At most this many of a conversation's messages (the most recent) go into a
/// transcript: a document, and the memory it takes to write one, stay bounded however
/// long the conversation.
pub const TRANSCRIPT_MAX_MESSAGES: usize = 200;

/// What a generator reads: the conversation as the command side knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub conversation_id: Uuid,
    pub title: String,
    /// The most recent messages, oldest first, at most [`TRANSCRIPT_MAX_MESSAGES`].
    pub messages: Vec<(Role, String)>,
    /// How many messages the conversation has in all.
    pub total_messages: usize,
}

impl Transcript {
    pub fn new(conversation_id: Uuid, title: String) -> Self {
        Transcript {
            conversation_id,
            title,
            messages: Vec::new(),
            total_messages: 0,
        }
    }

    /// Adds the conversation's next message, forgetting the oldest kept one when full.
    pub fn push(&mut self, role: Role, content: String) {
        if self.messages.len() == TRANSCRIPT_MAX_MESSAGES {
            self.messages.remove(0);
        }
        self.messages.push((role, content));
        self.total_messages += 1;
    }

    /// A document needs something to be generated from.
    pub fn check_generatable(&self) -> Result<(), DomainError> {
        if self.messages.is_empty() {
            Err(DomainError::NothingToGenerateFrom)
        } else {
            Ok(())
        }
    }
}

/// A generator's output.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedDocument {
    pub title: String,
    pub format: DocumentFormat,
    pub content: String,
    pub generator: Generator,
    /// The model call's usage, when an LLM wrote it.
    pub usage: Option<ModelUsage>,
}

/// What one model call cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelUsage {
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub latency_ms: i64,
}

const EXCERPT: usize = 280;

fn excerpt(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= EXCERPT {
        line
    } else {
        format!("{}…", line.chars().take(EXCERPT).collect::<String>())
    }
}

/// The deterministic generator: a document built from the conversation's messages (same
/// transcript, same document). The default until an LLM provider is configured.
pub fn template(kind: DocumentKind, t: &Transcript) -> GeneratedDocument {
    let by = |role: Role| {
        t.messages
            .iter()
            .filter(move |(r, _)| *r == role)
            .map(|(_, m)| excerpt(m))
    };
    let (title, content) = match kind {
        DocumentKind::RequirementsSpec => {
            let mut doc = format!("# Requirements: {}\n\n## Stated needs\n\n", t.title);
            for need in by(Role::User) {
                doc.push_str(&format!("- {need}\n"));
            }
            doc.push_str("\n## Proposed solution\n\n");
            for proposal in by(Role::Assistant) {
                doc.push_str(&format!("- {proposal}\n"));
            }
            (format!("Requirements: {}", t.title), doc)
        }
        DocumentKind::Summary => {
            let users = by(Role::User).count();
            let assistant = by(Role::Assistant).count();
            let shown = t.messages.len();
            let mut doc = if t.total_messages > shown {
                format!(
                    "# Summary: {}\n\n{} messages; the last {shown} ({users} from the user, {assistant} from the assistant).\n\n",
                    t.title, t.total_messages
                )
            } else {
                format!(
                    "# Summary: {}\n\n{shown} messages ({users} from the user, {assistant} from the assistant).\n\n",
                    t.title
                )
            };
            for (role, text) in &t.messages {
                doc.push_str(&format!("- **{}**: {}\n", role.as_str(), excerpt(text)));
            }
            (format!("Summary: {}", t.title), doc)
        }
        DocumentKind::MeetingNotes => {
            // Who spoke, what was said in order, and the lines that read as decisions or
            // actions (by their words: the offline generator does not understand them).
            let mut doc = format!("# Meeting notes: {}\n\n## Participants\n\n", t.title);
            for role in [Role::User, Role::Assistant, Role::System] {
                let n = by(role).count();
                if n > 0 {
                    doc.push_str(&format!("- {} ({n} messages)\n", role.as_str()));
                }
            }
            doc.push_str("\n## Discussion\n\n");
            for (role, text) in &t.messages {
                doc.push_str(&format!("- **{}**: {}\n", role.as_str(), excerpt(text)));
            }
            let marked = |words: &[&str]| -> Vec<String> {
                t.messages
                    .iter()
                    .map(|(_, m)| excerpt(m))
                    .filter(|m| {
                        let lower = m.to_lowercase();
                        words.iter().any(|w| lower.contains(w))
                    })
                    .collect()
            };
            for (heading, words) in [
                (
                    "Decisions",
                    &["decided", "agreed", "decision", "we will"][..],
                ),
                (
                    "Action items",
                    &[
                        "todo",
                        "action",
                        "will ",
                        "follow up",
                        "by friday",
                        "deadline",
                    ][..],
                ),
            ] {
                doc.push_str(&format!("\n## {heading}\n\n"));
                let lines = marked(words);
                if lines.is_empty() {
                    doc.push_str("- none recorded\n");
                }
                for line in lines {
                    doc.push_str(&format!("- {line}\n"));
                }
            }
            (format!("Meeting notes: {}", t.title), doc)
        }
    };
    GeneratedDocument {
        title: title.chars().take(TITLE_MAX).collect(),
        format: DocumentFormat::Markdown,
        content,
        generator: Generator {
            name: "template".into(),
            version: "1".into(),
        },
        usage: None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum DocumentCommand {
    Generate {
        document_id: Uuid,
        conversation_id: Uuid,
        kind: DocumentKind,
        /// Overrides the generator's title.
        title: Option<String>,
        /// How many messages the conversation had (the generator read the most recent).
        source_message_count: usize,
        generated: GeneratedDocument,
    },
    /// Ask an LLM generator for the document: it answers with `Complete` or `Fail`.
    Request {
        document_id: Uuid,
        conversation_id: Uuid,
        kind: DocumentKind,
        title: Option<String>,
    },
    Complete {
        source_message_count: usize,
        generated: GeneratedDocument,
    },
    Fail {
        reason: String,
        attempts: i32,
    },
}

aggregate_events!(DocumentEvent {
    DocumentGenerated,
    DocumentRequested,
    DocumentGenerationFailed,
});

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub id: Option<Uuid>,
    pub tenant_id: String,
    pub conversation_id: Option<Uuid>,
    pub version: Version,
    /// Where an LLM-generated document stands.
    #[serde(default)]
    pub status: DocumentStatus,
    /// What was requested (kind and title), until it is generated.
    #[serde(default)]
    pub requested: Option<(DocumentKind, Option<String>)>,
    /// Who asked for it.
    #[serde(default)]
    pub requested_by: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentStatus {
    #[default]
    New,
    Requested,
    Generated,
    Failed,
}

decided_aggregate!(Document, "document", DocumentCommand, DocumentEvent);

impl Document {
    /// The state after `event` (the aggregate's `apply`).
    fn evolve(&mut self, event: DocumentEvent) {
        self.version.0 += 1;
        match event {
            DocumentEvent::DocumentGenerated(e) => {
                self.id = Some(e.document_id);
                self.tenant_id = e.tenant_id;
                self.conversation_id = Some(e.conversation_id);
                self.status = DocumentStatus::Generated;
                self.requested = None;
            }
            DocumentEvent::DocumentRequested(e) => {
                self.id = Some(e.document_id);
                self.tenant_id = e.tenant_id;
                self.conversation_id = Some(e.conversation_id);
                self.status = DocumentStatus::Requested;
                self.requested = Some((e.kind, e.title));
                self.requested_by = Some(e.requested_by);
            }
            DocumentEvent::DocumentGenerationFailed(_) => {
                self.status = DocumentStatus::Failed;
                self.requested = None;
            }
        }
    }
}

/// The document a generator wrote, as its event: the requested title if there was one,
/// else the generator's (cut to the longest title).
fn generated_event(
    (document_id, conversation_id, kind): (Uuid, Uuid, DocumentKind),
    requested_by: String,
    ctx: super::CommandContext,
    title: Option<String>,
    source_message_count: usize,
    generated: GeneratedDocument,
) -> DocumentEvent {
    DocumentEvent::DocumentGenerated(DocumentGenerated {
        sealed: None,
        document_id,
        tenant_id: ctx.tenant_id,
        conversation_id,
        kind,
        title: title.unwrap_or_else(|| generated.title.chars().take(TITLE_MAX).collect()),
        format: generated.format,
        content: generated.content,
        source_message_count: i32::try_from(source_message_count).unwrap_or(i32::MAX),
        generator: generated.generator,
        generated_at: ctx.at,
        prompt_tokens: generated.usage.map(|u| u.prompt_tokens),
        completion_tokens: generated.usage.map(|u| u.completion_tokens),
        latency_ms: generated.usage.map(|u| u.latency_ms),
        requested_by: Some(requested_by),
    })
}

impl Document {
    /// The event a command produces, or why it is refused. Pure: no I/O.
    pub fn decide(&self, command: Command<DocumentCommand>) -> Result<DocumentEvent, DomainError> {
        let Command { ctx, body } = command;
        match body {
            DocumentCommand::Generate {
                document_id,
                conversation_id,
                kind,
                title,
                source_message_count,
                generated,
            } => {
                if self.id.is_some() {
                    // Only a retry of the same command can reach an existing document.
                    check_access(true, &self.tenant_id, None, self.version, &ctx)?;
                    return Err(DomainError::AlreadyExists);
                }
                let title = validate::optional_text("title", title.as_deref(), TITLE_MAX)?;
                if source_message_count == 0 {
                    return Err(DomainError::NothingToGenerateFrom);
                }
                let requested_by = ctx.actor.subject.clone();
                Ok(generated_event(
                    (document_id, conversation_id, kind),
                    requested_by,
                    ctx,
                    title,
                    source_message_count,
                    generated,
                ))
            }
            DocumentCommand::Request {
                document_id,
                conversation_id,
                kind,
                title,
            } => {
                if self.id.is_some() {
                    check_access(true, &self.tenant_id, None, self.version, &ctx)?;
                    return Err(DomainError::AlreadyExists);
                }
                Ok(DocumentEvent::DocumentRequested(DocumentRequested {
                    sealed: None,
                    document_id,
                    tenant_id: ctx.tenant_id,
                    conversation_id,
                    kind,
                    title: validate::optional_text("title", title.as_deref(), TITLE_MAX)?,
                    requested_by: ctx.actor.subject,
                    requested_at: ctx.at,
                }))
            }
            DocumentCommand::Complete {
                source_message_count,
                generated,
            } => {
                let (document_id, conversation_id, kind, title) = self.pending(&ctx)?;
                // The requester is told, not the generator that completed it.
                let requested_by = self
                    .requested_by
                    .clone()
                    .unwrap_or_else(|| ctx.actor.subject.clone());
                Ok(generated_event(
                    (document_id, conversation_id, kind),
                    requested_by,
                    ctx,
                    title,
                    source_message_count,
                    generated,
                ))
            }
            DocumentCommand::Fail { reason, attempts } => {
                let (document_id, conversation_id, _, _) = self.pending(&ctx)?;
                Ok(DocumentEvent::DocumentGenerationFailed(
                    DocumentGenerationFailed {
                        sealed: None,
                        document_id,
                        conversation_id,
                        reason: validate::text("reason", &reason, validate::REASON_MAX, false)?,
                        attempts: attempts.max(0),
                        failed_at: ctx.at,
                    },
                ))
            }
        }
    }

    /// A requested document still waiting for its generator: its id, conversation,
    /// kind and requested title.
    #[allow(clippy::type_complexity)]
    fn pending(
        &self,
        ctx: &super::CommandContext,
    ) -> Result<(Uuid, Uuid, DocumentKind, Option<String>), DomainError> {
        check_access(self.id.is_some(), &self.tenant_id, None, self.version, ctx)?;
        match (&self.status, &self.requested, self.id, self.conversation_id) {
            (DocumentStatus::Requested, Some((kind, title)), Some(id), Some(conversation)) => {
                Ok((id, conversation, *kind, title.clone()))
            }
            _ => Err(DomainError::DocumentNotPending),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_generator_is_deterministic_and_uses_the_messages() {
        let mut t = Transcript::new(Uuid::new_v4(), "Shop".into());
        t.push(Role::User, "We need   online payments".into());
        t.push(Role::Assistant, "Use a PSP with 3-D Secure".into());
        let a = template(DocumentKind::RequirementsSpec, &t);
        let b = template(DocumentKind::RequirementsSpec, &t);
        assert_eq!(a, b);
        assert!(
            a.content.contains("- We need online payments"),
            "{}",
            a.content
        );
        assert!(
            a.content.contains("- Use a PSP with 3-D Secure"),
            "{}",
            a.content
        );
        let s = template(DocumentKind::Summary, &t);
        assert!(
            s.content
                .contains("2 messages (1 from the user, 1 from the assistant)"),
            "{}",
            s.content
        );
    }

    #[test]
    fn a_long_conversation_gives_a_bounded_transcript_and_document() {
        let mut t = Transcript::new(Uuid::new_v4(), "Long".into());
        for n in 0..10_000 {
            t.push(Role::User, format!("message {n} {}", "x".repeat(300)));
        }
        assert_eq!(t.total_messages, 10_000);
        assert_eq!(t.messages.len(), TRANSCRIPT_MAX_MESSAGES);
        assert!(t.messages[0].1.starts_with("message 9800 "));
        let doc = template(DocumentKind::Summary, &t);
        assert!(
            doc.content.contains("10000 messages; the last 200"),
            "{}",
            &doc.content[..200]
        );
        assert!(doc.content.len() < 80_000, "{} bytes", doc.content.len());
    }

    #[test]
    fn meeting_notes_list_participants_discussion_decisions_and_actions() {
        let mut t = Transcript::new(Uuid::new_v4(), "Weekly sync".into());
        t.push(Role::User, "We agreed to ship the beta on Monday.".into());
        t.push(
            Role::Assistant,
            "Noted. Who will update the release notes?".into(),
        );
        t.push(Role::User, "Ann will update them by Friday.".into());
        let doc = template(DocumentKind::MeetingNotes, &t);
        assert_eq!(doc.title, "Meeting notes: Weekly sync");
        for part in [
            "## Participants",
            "- user (2 messages)",
            "## Discussion",
            "## Decisions\n\n- We agreed to ship the beta on Monday.",
            "## Action items",
            "- Ann will update them by Friday.",
        ] {
            assert!(
                doc.content.contains(part),
                "{part} missing from:\n{}",
                doc.content
            );
        }
        assert_eq!(
            doc,
            template(DocumentKind::MeetingNotes, &t),
            "deterministic"
        );
    }
}
