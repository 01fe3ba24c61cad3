//! Rust types of the published events. Field names, types and order match the Avro
//! schema files in `schemas/avro/<event>/v<N>.avsc` (the latest version of each).
//! Timestamps travel as Avro `timestamp-millis`, so they carry millisecond precision.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::topics::AggregateKind;

/// The current time at the precision events carry (milliseconds).
pub fn timestamp_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// UUIDs travel as their canonical text (Avro `string`), whatever the serializer's
/// human-readable setting.
mod uuid_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&id.hyphenated())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        let text = String::deserialize(d)?;
        Uuid::parse_str(&text).map_err(D::Error::custom)
    }
}

/// Optional UUIDs travel as an Avro union of `null` and the canonical text.
mod uuid_text_opt {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(id: &Option<Uuid>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_some(&id.hyphenated().to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| Uuid::parse_str(&text).map_err(D::Error::custom))
            .transpose()
    }
}

fn yes() -> bool {
    true
}

/// Author of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    RequirementsSpec,
    Summary,
    /// Schema v3 of DocumentGenerated, v2 of DocumentRequested.
    MeetingNotes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentFormat {
    Markdown,
    PlainText,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationStarted {
    #[serde(with = "uuid_text")]
    pub conversation_id: Uuid,
    pub tenant_id: String,
    pub title: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub started_at: DateTime<Utc>,
    /// The subject who started it (`None` for conversations from before schema v2).
    #[serde(default)]
    pub started_by: Option<String>,
    /// Whether the assistant answers its users' messages (on before schema v3).
    #[serde(default = "yes")]
    pub assistant: bool,
    /// The personal fields, sealed: set on Kafka when data protection is on (the fields
    /// then carry placeholders); never set on an event a reader has opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedBox>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageSent {
    #[serde(with = "uuid_text")]
    pub conversation_id: Uuid,
    #[serde(with = "uuid_text")]
    pub message_id: Uuid,
    pub role: Role,
    pub content: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub prompt_tokens: Option<i32>,
    #[serde(default)]
    pub completion_tokens: Option<i32>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub sent_at: DateTime<Utc>,
    /// The user message an assistant reply answers (schema v2).
    #[serde(default, with = "uuid_text_opt")]
    pub reply_to: Option<Uuid>,
    #[serde(default)]
    pub latency_ms: Option<i64>,
    /// The retrieved context an assistant reply was written from, best first.
    #[serde(default)]
    pub sources: Vec<MessageSource>,
    /// The personal fields, sealed: set on Kafka when data protection is on (the fields
    /// then carry placeholders); never set on an event a reader has opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedBox>,
}

/// Something retrieved and given to the model as context for a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageSource {
    /// `message`, `document` or `knowledge`.
    pub kind: String,
    #[serde(with = "uuid_text")]
    pub id: Uuid,
    pub title: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssistantReplyFailed {
    #[serde(with = "uuid_text")]
    pub conversation_id: Uuid,
    /// The user message that got no reply.
    #[serde(with = "uuid_text")]
    pub message_id: Uuid,
    pub reason: String,
    pub attempts: i32,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub failed_at: DateTime<Utc>,
    /// Who asked (schema v2): the one told of the failure.
    #[serde(default)]
    pub asked_by: Option<String>,
    /// The personal fields, sealed: set on Kafka when data protection is on (the fields
    /// then carry placeholders); never set on an event a reader has opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedBox>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssistantReplyRequested {
    #[serde(with = "uuid_text")]
    pub conversation_id: Uuid,
    #[serde(with = "uuid_text")]
    pub message_id: Uuid,
    pub requested_by: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub requested_at: DateTime<Utc>,
    /// The personal fields, sealed: set on Kafka when data protection is on (the fields
    /// then carry placeholders); never set on an event a reader has opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedBox>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationRenamed {
    #[serde(with = "uuid_text")]
    pub conversation_id: Uuid,
    pub title: String,
    pub previous_title: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub renamed_at: DateTime<Utc>,
    /// The personal fields, sealed: set on Kafka when data protection is on (the fields
    /// then carry placeholders); never set on an event a reader has opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedBox>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationEnded {
    #[serde(with = "uuid_text")]
    pub conversation_id: Uuid,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub ended_at: DateTime<Utc>,
    /// The personal fields, sealed: set on Kafka when data protection is on (the fields
    /// then carry placeholders); never set on an event a reader has opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedBox>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generator {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentGenerated {
    #[serde(with = "uuid_text")]
    pub document_id: Uuid,
    pub tenant_id: String,
    #[serde(with = "uuid_text")]
    pub conversation_id: Uuid,
    pub kind: DocumentKind,
    pub title: String,
    pub format: DocumentFormat,
    pub content: String,
    pub source_message_count: i32,
    pub generator: Generator,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub generated_at: DateTime<Utc>,
    /// The model call's usage, when an LLM wrote it (schema v2).
    #[serde(default)]
    pub prompt_tokens: Option<i32>,
    #[serde(default)]
    pub completion_tokens: Option<i32>,
    #[serde(default)]
    pub latency_ms: Option<i64>,
    /// Who asked for it (schema v3): the one told it is ready.
    #[serde(default)]
    pub requested_by: Option<String>,
    /// The personal fields, sealed: set on Kafka when data protection is on (the fields
    /// then carry placeholders); never set on an event a reader has opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedBox>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRequested {
    #[serde(with = "uuid_text")]
    pub document_id: Uuid,
    pub tenant_id: String,
    #[serde(with = "uuid_text")]
    pub conversation_id: Uuid,
    pub kind: DocumentKind,
    #[serde(default)]
    pub title: Option<String>,
    pub requested_by: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub requested_at: DateTime<Utc>,
    /// The personal fields, sealed: set on Kafka when data protection is on (the fields
    /// then carry placeholders); never set on an event a reader has opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedBox>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentGenerationFailed {
    #[serde(with = "uuid_text")]
    pub document_id: Uuid,
    #[serde(with = "uuid_text")]
    pub conversation_id: Uuid,
    pub reason: String,
    pub attempts: i32,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub failed_at: DateTime<Utc>,
    /// The personal fields, sealed: set on Kafka when data protection is on (the fields
    /// then carry placeholders); never set on an event a reader has opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedBox>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeDocumentAdded {
    #[serde(with = "uuid_text")]
    pub knowledge_id: Uuid,
    pub tenant_id: String,
    pub title: String,
    pub media_type: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub text: String,
    #[serde(default)]
    pub added_by: Option<String>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub added_at: DateTime<Utc>,
    /// The personal fields, sealed: set on Kafka when data protection is on (the fields
    /// then carry placeholders); never set on an event a reader has opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedBox>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeDocumentRemoved {
    #[serde(with = "uuid_text")]
    pub knowledge_id: Uuid,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub removed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointCreated {
    #[serde(with = "uuid_text")]
    pub endpoint_id: Uuid,
    pub tenant_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// The signing secret, sealed with the services' key: never the secret itself.
    pub sealed_secret: String,
    pub created_by: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointUpdated {
    #[serde(with = "uuid_text")]
    pub endpoint_id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecretRotated {
    #[serde(with = "uuid_text")]
    pub endpoint_id: Uuid,
    pub sealed_secret: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub previous_valid_until: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub rotated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointDisabled {
    #[serde(with = "uuid_text")]
    pub endpoint_id: Uuid,
    /// True when the delivery service disabled it because it kept failing.
    pub automatic: bool,
    pub reason: String,
    /// The endpoint's creator, who is told.
    pub owner: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub disabled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointEnabled {
    #[serde(with = "uuid_text")]
    pub endpoint_id: Uuid,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub enabled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointDeleted {
    #[serde(with = "uuid_text")]
    pub endpoint_id: Uuid,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub deleted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookMessageFailed {
    #[serde(with = "uuid_text")]
    pub endpoint_id: Uuid,
    /// The message's `webhook-id`.
    pub message_id: String,
    #[serde(with = "uuid_text")]
    pub event_id: Uuid,
    /// Its webhook type (`message.sent`).
    pub event_type: String,
    pub attempts: i32,
    pub last_error: String,
    /// The endpoint's creator, who is told.
    pub owner: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub failed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRedeliveryRequested {
    #[serde(with = "uuid_text")]
    pub endpoint_id: Uuid,
    /// One message to send again whatever became of it; `None` for a range of dead ones.
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default, with = "chrono::serde::ts_milliseconds_option")]
    pub since: Option<DateTime<Utc>>,
    #[serde(default, with = "chrono::serde::ts_milliseconds_option")]
    pub until: Option<DateTime<Utc>>,
    pub requested_by: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub requested_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationsRead {
    #[serde(with = "uuid_text")]
    pub inbox_id: Uuid,
    pub tenant_id: String,
    pub user_id: String,
    /// UUIDs of the notifications read, as text.
    pub notification_ids: Vec<String>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub read_at: DateTime<Utc>,
}

/// A person's, a conversation's or the whole tenant's personal data was erased: the keys
/// that sealed it are empty (docs/DATA-PROTECTION.md, "Erasure").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectErased {
    #[serde(with = "uuid_text")]
    pub subject_id: Uuid,
    pub tenant_id: String,
    /// The subject's name (`user:<sub>`, `conversation:<uuid>`, `tenant`).
    pub subject: String,
    /// UUIDs of the conversations whose keys are erased, as text; empty for a tenant.
    pub conversation_ids: Vec<String>,
    /// Keys this request emptied (0 when it repeats an erasure).
    pub keys_erased: i64,
    pub reason: String,
    pub erased_by: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub erased_at: DateTime<Utc>,
}

impl SubjectErased {
    /// The conversations it names (an id that is not a UUID is skipped: none is written).
    pub fn conversations(&self) -> Vec<Uuid> {
        self.conversation_ids
            .iter()
            .filter_map(|id| id.parse().ok())
            .collect()
    }

    /// Whether the whole tenant was erased.
    pub fn is_tenant(&self) -> bool {
        self.subject == crate::Subject::Tenant.to_string()
    }

    /// The person erased, by their token's `sub`, if a person was.
    pub fn person(&self) -> Option<&str> {
        self.subject.strip_prefix("user:")
    }
}

/// An event's personal fields, sealed under a subject key (docs/DATA-PROTECTION.md):
/// `box` is the base64 of the nonce, the ChaCha20-Poly1305 ciphertext of the fields as one
/// JSON object, and the tag; the associated data is the event's identity
/// (`aggregate_type NUL aggregate_id NUL sequence NUL event_type`). Its serde form is the
/// same in the event store's JSON and in the Avro records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedBox {
    /// The subject whose key sealed it (`conversation:<uuid>`, `tenant`).
    pub key: String,
    pub generation: i32,
    #[serde(rename = "box")]
    pub sealed: String,
}

/// Name of an event type, as stored in the event store and sent in the `event_type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    ConversationStarted,
    MessageSent,
    ConversationRenamed,
    ConversationEnded,
    DocumentGenerated,
    KnowledgeDocumentAdded,
    KnowledgeDocumentRemoved,
    AssistantReplyFailed,
    AssistantReplyRequested,
    DocumentRequested,
    DocumentGenerationFailed,
    WebhookEndpointCreated,
    WebhookEndpointUpdated,
    WebhookSecretRotated,
    WebhookEndpointDisabled,
    WebhookEndpointEnabled,
    WebhookEndpointDeleted,
    WebhookMessageFailed,
    WebhookRedeliveryRequested,
    NotificationsRead,
    SubjectErased,
}

impl EventType {
    pub const ALL: [EventType; 21] = [
        EventType::ConversationStarted,
        EventType::MessageSent,
        EventType::ConversationRenamed,
        EventType::ConversationEnded,
        EventType::DocumentGenerated,
        EventType::KnowledgeDocumentAdded,
        EventType::KnowledgeDocumentRemoved,
        EventType::AssistantReplyFailed,
        EventType::AssistantReplyRequested,
        EventType::DocumentRequested,
        EventType::DocumentGenerationFailed,
        EventType::WebhookEndpointCreated,
        EventType::WebhookEndpointUpdated,
        EventType::WebhookSecretRotated,
        EventType::WebhookEndpointDisabled,
        EventType::WebhookEndpointEnabled,
        EventType::WebhookEndpointDeleted,
        EventType::WebhookMessageFailed,
        EventType::WebhookRedeliveryRequested,
        EventType::NotificationsRead,
        EventType::SubjectErased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ConversationStarted => "ConversationStarted",
            EventType::MessageSent => "MessageSent",
            EventType::ConversationRenamed => "ConversationRenamed",
            EventType::ConversationEnded => "ConversationEnded",
            EventType::DocumentGenerated => "DocumentGenerated",
            EventType::KnowledgeDocumentAdded => "KnowledgeDocumentAdded",
            EventType::KnowledgeDocumentRemoved => "KnowledgeDocumentRemoved",
            EventType::AssistantReplyFailed => "AssistantReplyFailed",
            EventType::AssistantReplyRequested => "AssistantReplyRequested",
            EventType::DocumentRequested => "DocumentRequested",
            EventType::DocumentGenerationFailed => "DocumentGenerationFailed",
            EventType::WebhookEndpointCreated => "WebhookEndpointCreated",
            EventType::WebhookEndpointUpdated => "WebhookEndpointUpdated",
            EventType::WebhookSecretRotated => "WebhookSecretRotated",
            EventType::WebhookEndpointDisabled => "WebhookEndpointDisabled",
            EventType::WebhookEndpointEnabled => "WebhookEndpointEnabled",
            EventType::WebhookEndpointDeleted => "WebhookEndpointDeleted",
            EventType::WebhookMessageFailed => "WebhookMessageFailed",
            EventType::WebhookRedeliveryRequested => "WebhookRedeliveryRequested",
            EventType::NotificationsRead => "NotificationsRead",
            EventType::SubjectErased => "SubjectErased",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The event's name in webhooks (`message.sent`), the `type` of a delivered message
    /// and what an endpoint subscribes to; `None` for the webhook endpoints' own events,
    /// which are not delivered.
    pub fn webhook_type(self) -> Option<&'static str> {
        Some(match self {
            EventType::ConversationStarted => "conversation.started",
            EventType::MessageSent => "message.sent",
            EventType::ConversationRenamed => "conversation.renamed",
            EventType::ConversationEnded => "conversation.ended",
            EventType::DocumentGenerated => "document.generated",
            EventType::KnowledgeDocumentAdded => "knowledge.added",
            EventType::KnowledgeDocumentRemoved => "knowledge.removed",
            EventType::AssistantReplyFailed => "assistant.reply_failed",
            EventType::AssistantReplyRequested => "assistant.reply_requested",
            EventType::DocumentRequested => "document.requested",
            EventType::DocumentGenerationFailed => "document.generation_failed",
            EventType::SubjectErased => "subject.erased",
            EventType::WebhookEndpointCreated
            | EventType::WebhookEndpointUpdated
            | EventType::WebhookSecretRotated
            | EventType::WebhookEndpointDisabled
            | EventType::WebhookEndpointEnabled
            | EventType::WebhookEndpointDeleted
            | EventType::WebhookMessageFailed
            | EventType::WebhookRedeliveryRequested
            // A user's own reading, nobody else's business.
            | EventType::NotificationsRead => return None,
        })
    }

    /// Every webhook type an endpoint may subscribe to.
    pub fn webhook_types() -> impl Iterator<Item = &'static str> {
        Self::ALL.into_iter().filter_map(Self::webhook_type)
    }

    pub fn aggregate(self) -> AggregateKind {
        match self {
            EventType::DocumentGenerated
            | EventType::DocumentRequested
            | EventType::DocumentGenerationFailed => AggregateKind::Document,
            EventType::KnowledgeDocumentAdded | EventType::KnowledgeDocumentRemoved => {
                AggregateKind::Knowledge
            }
            EventType::ConversationStarted
            | EventType::MessageSent
            | EventType::ConversationRenamed
            | EventType::ConversationEnded
            | EventType::AssistantReplyFailed
            | EventType::AssistantReplyRequested => AggregateKind::Conversation,
            EventType::WebhookEndpointCreated
            | EventType::WebhookEndpointUpdated
            | EventType::WebhookSecretRotated
            | EventType::WebhookEndpointDisabled
            | EventType::WebhookEndpointEnabled
            | EventType::WebhookEndpointDeleted
            | EventType::WebhookMessageFailed
            | EventType::WebhookRedeliveryRequested => AggregateKind::WebhookEndpoint,
            EventType::NotificationsRead => AggregateKind::Inbox,
            EventType::SubjectErased => AggregateKind::Subject,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A contract type: one published event with its own schema.
pub trait Contract: Serialize + serde::de::DeserializeOwned {
    const EVENT_TYPE: EventType;
}

macro_rules! contract {
    ($($t:ident),*) => {
        $(impl Contract for $t { const EVENT_TYPE: EventType = EventType::$t; })*

        /// Any published event. Its serde form (externally tagged by event type) is
        /// also the JSON payload kept in the event store.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum Event {
            $($t($t),)*
        }

        impl Event {
            pub fn event_type(&self) -> EventType {
                match self { $(Event::$t(_) => EventType::$t,)* }
            }
        }

        $(impl From<$t> for Event { fn from(e: $t) -> Self { Event::$t(e) } })*
    };
}

contract!(
    ConversationStarted,
    MessageSent,
    ConversationRenamed,
    ConversationEnded,
    DocumentGenerated,
    KnowledgeDocumentAdded,
    KnowledgeDocumentRemoved,
    AssistantReplyFailed,
    AssistantReplyRequested,
    DocumentRequested,
    DocumentGenerationFailed,
    WebhookEndpointCreated,
    WebhookEndpointUpdated,
    WebhookSecretRotated,
    WebhookEndpointDisabled,
    WebhookEndpointEnabled,
    WebhookEndpointDeleted,
    WebhookMessageFailed,
    WebhookRedeliveryRequested,
    NotificationsRead,
    SubjectErased
);

impl Event {
    /// Its sealed personal fields, as a Kafka record carries them with data protection on.
    pub fn sealed(&self) -> Option<&SealedBox> {
        match self {
            Event::ConversationStarted(e) => e.sealed.as_ref(),
            Event::MessageSent(e) => e.sealed.as_ref(),
            Event::ConversationRenamed(e) => e.sealed.as_ref(),
            Event::ConversationEnded(e) => e.sealed.as_ref(),
            Event::AssistantReplyFailed(e) => e.sealed.as_ref(),
            Event::AssistantReplyRequested(e) => e.sealed.as_ref(),
            Event::DocumentGenerated(e) => e.sealed.as_ref(),
            Event::DocumentRequested(e) => e.sealed.as_ref(),
            Event::DocumentGenerationFailed(e) => e.sealed.as_ref(),
            Event::KnowledgeDocumentAdded(e) => e.sealed.as_ref(),
            Event::KnowledgeDocumentRemoved(_)
            | Event::WebhookEndpointCreated(_)
            | Event::WebhookEndpointUpdated(_)
            | Event::WebhookSecretRotated(_)
            | Event::WebhookEndpointDisabled(_)
            | Event::WebhookEndpointEnabled(_)
            | Event::WebhookEndpointDeleted(_)
            | Event::WebhookMessageFailed(_)
            | Event::WebhookRedeliveryRequested(_)
            | Event::NotificationsRead(_)
            | Event::SubjectErased(_) => None,
        }
    }

    /// The conversation whose data the event is: its own for a conversation's events,
    /// the one a document was made from for a document's (what an erasure of that
    /// conversation reaches); none for the others.
    pub fn conversation_id(&self) -> Option<Uuid> {
        match self {
            Event::ConversationStarted(e) => Some(e.conversation_id),
            Event::MessageSent(e) => Some(e.conversation_id),
            Event::ConversationRenamed(e) => Some(e.conversation_id),
            Event::ConversationEnded(e) => Some(e.conversation_id),
            Event::AssistantReplyFailed(e) => Some(e.conversation_id),
            Event::AssistantReplyRequested(e) => Some(e.conversation_id),
            Event::DocumentGenerated(e) => Some(e.conversation_id),
            Event::DocumentRequested(e) => Some(e.conversation_id),
            Event::DocumentGenerationFailed(e) => Some(e.conversation_id),
            Event::KnowledgeDocumentAdded(_)
            | Event::KnowledgeDocumentRemoved(_)
            | Event::WebhookEndpointCreated(_)
            | Event::WebhookEndpointUpdated(_)
            | Event::WebhookSecretRotated(_)
            | Event::WebhookEndpointDisabled(_)
            | Event::WebhookEndpointEnabled(_)
            | Event::WebhookEndpointDeleted(_)
            | Event::WebhookMessageFailed(_)
            | Event::WebhookRedeliveryRequested(_)
            | Event::NotificationsRead(_)
            | Event::SubjectErased(_) => None,
        }
    }

    /// Id of the aggregate the event belongs to (the Kafka record key).
    pub fn aggregate_id(&self) -> Uuid {
        match self {
            Event::ConversationStarted(e) => e.conversation_id,
            Event::MessageSent(e) => e.conversation_id,
            Event::ConversationRenamed(e) => e.conversation_id,
            Event::ConversationEnded(e) => e.conversation_id,
            Event::DocumentGenerated(e) => e.document_id,
            Event::KnowledgeDocumentAdded(e) => e.knowledge_id,
            Event::KnowledgeDocumentRemoved(e) => e.knowledge_id,
            Event::AssistantReplyFailed(e) => e.conversation_id,
            Event::AssistantReplyRequested(e) => e.conversation_id,
            Event::DocumentRequested(e) => e.document_id,
            Event::DocumentGenerationFailed(e) => e.document_id,
            Event::WebhookEndpointCreated(e) => e.endpoint_id,
            Event::WebhookEndpointUpdated(e) => e.endpoint_id,
            Event::WebhookSecretRotated(e) => e.endpoint_id,
            Event::WebhookEndpointDisabled(e) => e.endpoint_id,
            Event::WebhookEndpointEnabled(e) => e.endpoint_id,
            Event::WebhookEndpointDeleted(e) => e.endpoint_id,
            Event::WebhookMessageFailed(e) => e.endpoint_id,
            Event::WebhookRedeliveryRequested(e) => e.endpoint_id,
            Event::NotificationsRead(e) => e.inbox_id,
            Event::SubjectErased(e) => e.subject_id,
        }
    }
}
