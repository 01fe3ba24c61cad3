//! Which fields of an event are personal, and whose key seals them
//! (docs/DATA-PROTECTION.md, "What is personal, and whose it is"). The one table of it:
//! the store seals these fields, readers open them, and an erased field reads as its
//! [`Blank`].

use crate::EventType;

/// What an erased field reads as: a value of the field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blank {
    /// A string (or an optional one): `"[erased]"`.
    Text,
    /// A map: `{}`.
    Map,
    /// A list: `[]`.
    List,
}

/// The text an erased string reads as.
pub const ERASED: &str = "[erased]";

/// The text a sealed string carries in a Kafka record until it is opened.
pub const SEALED: &str = "[sealed]";

impl Blank {
    /// What the field reads as once its key is erased.
    pub fn value(self) -> serde_json::Value {
        self.with_text(ERASED)
    }

    /// What the field carries in a record whose personal fields are sealed.
    pub fn placeholder(self) -> serde_json::Value {
        self.with_text(SEALED)
    }

    fn with_text(self, text: &str) -> serde_json::Value {
        match self {
            Blank::Text => serde_json::Value::String(text.to_owned()),
            Blank::Map => serde_json::Value::Object(Default::default()),
            Blank::List => serde_json::Value::Array(Vec::new()),
        }
    }
}

/// Whose key seals an event's personal fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedBy {
    /// The conversation's own key (named by the event's `conversation_id`), owned by the
    /// person who started it: erasing them erases it, and so does retention.
    Conversation,
    /// The tenant's key: company knowledge, erased with the tenant.
    Tenant,
}

/// An event type's personal fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Personal {
    pub sealed_by: SealedBy,
    pub fields: &'static [(&'static str, Blank)],
}

impl EventType {
    /// Its personal fields, if it has any.
    pub fn personal(self) -> Option<Personal> {
        use Blank::{List, Map, Text};
        let (sealed_by, fields): (SealedBy, &'static [(&'static str, Blank)]) = match self {
            EventType::ConversationStarted => (
                SealedBy::Conversation,
                &[("title", Text), ("metadata", Map), ("started_by", Text)],
            ),
            EventType::MessageSent => (
                SealedBy::Conversation,
                &[("content", Text), ("sources", List)],
            ),
            EventType::ConversationRenamed => (
                SealedBy::Conversation,
                &[("title", Text), ("previous_title", Text)],
            ),
            EventType::ConversationEnded => (SealedBy::Conversation, &[("reason", Text)]),
            EventType::AssistantReplyFailed => (
                SealedBy::Conversation,
                &[("reason", Text), ("asked_by", Text)],
            ),
            EventType::AssistantReplyRequested => {
                (SealedBy::Conversation, &[("requested_by", Text)])
            }
            EventType::DocumentRequested => (
                SealedBy::Conversation,
                &[("title", Text), ("requested_by", Text)],
            ),
            EventType::DocumentGenerated => (
                SealedBy::Conversation,
                &[("title", Text), ("content", Text), ("requested_by", Text)],
            ),
            EventType::DocumentGenerationFailed => (SealedBy::Conversation, &[("reason", Text)]),
            EventType::KnowledgeDocumentAdded => (
                SealedBy::Tenant,
                &[("title", Text), ("text", Text), ("added_by", Text)],
            ),
            // Ids, URLs, sealed secrets, timestamps: nothing of a person.
            EventType::KnowledgeDocumentRemoved
            | EventType::WebhookEndpointCreated
            | EventType::WebhookEndpointUpdated
            | EventType::WebhookSecretRotated
            | EventType::WebhookEndpointDisabled
            | EventType::WebhookEndpointEnabled
            | EventType::WebhookEndpointDeleted
            | EventType::WebhookMessageFailed
            | EventType::WebhookRedeliveryRequested
            | EventType::NotificationsRead
            // The erasure's own record: who was erased stays, as the proof that it was
            // (docs/DATA-PROTECTION.md, "Erasure").
            | EventType::SubjectErased => return None,
        };
        Some(Personal { sealed_by, fields })
    }
}
