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

/// How a stored event names a person who acted, under data protection: a random id per
/// person of a tenant, which only the store can resolve while the person is not erased
/// (docs/DATA-PROTECTION.md, "Pseudonyms"). Its text is `pseudonym:<uuid>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pseudonym(pub uuid::Uuid);

impl Pseudonym {
    /// What its text begins with.
    pub const PREFIX: &'static str = "pseudonym:";

    /// The pseudonym `text` is, if it is one.
    pub fn parse(text: &str) -> Option<Pseudonym> {
        text.strip_prefix(Self::PREFIX)?.parse().ok().map(Pseudonym)
    }
}

impl std::fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

impl EventType {
    /// The payload fields naming a person who acted (beside the metadata's `user_id`),
    /// outside the sealed fields: under data protection each is stored as the person's
    /// [`Pseudonym`] and read back as their id while they are not erased.
    pub fn actors(self) -> &'static [&'static str] {
        match self {
            EventType::WebhookEndpointCreated => &["created_by"],
            EventType::WebhookEndpointDisabled | EventType::WebhookMessageFailed => &["owner"],
            EventType::WebhookRedeliveryRequested => &["requested_by"],
            EventType::NotificationsRead => &["user_id"],
            EventType::SubjectErased => &["erased_by"],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod pseudonym_tests {
    use super::*;

    #[test]
    fn a_pseudonym_reads_back_from_its_text_and_nothing_else_is_one() {
        let p = Pseudonym(uuid::Uuid::from_u128(7));
        assert_eq!(Pseudonym::parse(&p.to_string()), Some(p));
        assert_eq!(Pseudonym::parse("ann"), None);
        assert_eq!(Pseudonym::parse("pseudonym:ann"), None);
        assert_eq!(Pseudonym::parse(&p.0.to_string()), None);
    }
}
