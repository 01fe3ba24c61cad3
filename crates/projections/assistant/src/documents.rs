//! Documents asked of an LLM: the kind's versioned template filled with the transcript,
//! the `document` route, the answer as the document. Pure parts here; the assistant
//! performs them (`Assistant::document`).

use domain::{GeneratedDocument, ModelUsage, Transcript};
use llm::{ChatMessage, ChatRequest, Completion, ContextItem};
use schemas::{DocumentFormat, DocumentKind, Generator};
use uuid::Uuid;

/// A kind's template and its version (recorded on the document as the generator's
/// version: a change of wording is a new file and a new version).
pub fn template(kind: DocumentKind) -> (&'static str, &'static str) {
    match kind {
        DocumentKind::RequirementsSpec => (
            include_str!("../prompts/requirements_spec-v1.md"),
            "requirements_spec-v1",
        ),
        DocumentKind::Summary => (include_str!("../prompts/summary-v1.md"), "summary-v1"),
        DocumentKind::MeetingNotes => (
            include_str!("../prompts/meeting_notes-v1.md"),
            "meeting_notes-v1",
        ),
    }
}

/// The request for a document of `kind` from the transcript. The messages also go in
/// as context, so the offline extractive provider has something to quote.
pub fn request(kind: DocumentKind, t: &Transcript) -> ChatRequest {
    let (template, _) = template(kind);
    let transcript = t
        .messages
        .iter()
        .map(|(role, text)| format!("{}: {text}", role.as_str()))
        .collect::<Vec<_>>()
        .join("\n");
    let prompt = template
        .replace("{title}", &t.title)
        .replace("{transcript}", &transcript);
    ChatRequest {
        messages: vec![
            ChatMessage::system(prompt),
            ChatMessage::user(format!("Write the document for \"{}\".", t.title)),
        ],
        max_tokens: Some(2_000),
        temperature: None,
        context: t
            .messages
            .iter()
            .map(|(_, text)| ContextItem {
                source_id: t.conversation_id,
                title: t.title.clone(),
                text: text.clone(),
                score: 1.0,
            })
            .collect(),
    }
}

/// What the model wrote, as the document (title: its first heading, else the kind's
/// name and the conversation's title).
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub document: GeneratedDocument,
    pub source_message_count: usize,
}

pub fn written(kind: DocumentKind, t: &Transcript, c: &Completion) -> Written {
    let (_, version) = template(kind);
    let heading = c
        .text
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .map(str::trim)
        .filter(|h| !h.is_empty());
    let title = match heading {
        Some(h) => h.to_owned(),
        None => match kind {
            DocumentKind::RequirementsSpec => format!("Requirements: {}", t.title),
            DocumentKind::Summary => format!("Summary: {}", t.title),
            DocumentKind::MeetingNotes => format!("Meeting notes: {}", t.title),
        },
    };
    Written {
        document: GeneratedDocument {
            title: title.chars().take(domain::TITLE_MAX).collect(),
            format: DocumentFormat::Markdown,
            content: c.text.clone(),
            generator: Generator {
                name: c.model.chars().take(domain::MODEL_MAX).collect(),
                version: version.to_owned(),
            },
            usage: Some(ModelUsage {
                prompt_tokens: c.usage.prompt_tokens.min(i32::MAX as u32) as i32,
                completion_tokens: c.usage.completion_tokens.min(i32::MAX as u32) as i32,
                latency_ms: c.latency.as_millis().min(i64::MAX as u128) as i64,
            }),
        },
        source_message_count: t.total_messages,
    }
}

/// For logs: which document.
pub fn describe(document_id: Uuid, kind: DocumentKind) -> String {
    format!("{kind:?} {document_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::Role;

    #[test]
    fn the_prompt_holds_the_template_and_the_transcript_and_the_title_comes_from_the_heading() {
        let mut t = Transcript::new(Uuid::nil(), "Shop".into());
        t.push(Role::User, "We need online payments".into());
        let req = request(DocumentKind::RequirementsSpec, &t);
        let system = &req.messages[0].content;
        assert!(
            system.contains("## Non-functional requirements"),
            "{system}"
        );
        assert!(system.contains("user: We need online payments"), "{system}");
        assert!(!system.contains("{transcript}"));
        let completion = Completion {
            text: "# Payments\n\n## Purpose\n...".into(),
            model: "openai/gpt-test".into(),
            provider: "primary".into(),
            usage: llm::Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
            },
            finish_reason: llm::FinishReason::Stop,
            latency: std::time::Duration::from_millis(7),
        };
        let w = written(DocumentKind::RequirementsSpec, &t, &completion);
        assert_eq!(w.document.title, "Payments");
        assert_eq!(w.document.generator.name, "openai/gpt-test");
        assert_eq!(w.document.generator.version, "requirements_spec-v1");
        assert_eq!(w.document.usage.map(|u| u.latency_ms), Some(7));
        assert_eq!(w.source_message_count, 1);
    }
}
