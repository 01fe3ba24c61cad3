//! The schema-id table: every schema version ever published, with its stable id.
//!
//! The id is what the Confluent wire format carries in bytes 1..5. Ids are assigned here,
//! once, and never reused or changed, so producers and consumers agree on them without a
//! registry server. When a registry is used, these schemas are registered under the
//! subject `<topic>-<record full name>` (TopicRecordNameStrategy, several event types
//! share one topic) and this table is checked against it.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use apache_avro::Schema;

use crate::events::EventType;

/// Id of one schema version in the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaId(pub u32);

impl fmt::Display for SchemaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct SchemaVersion {
    pub id: SchemaId,
    pub event_type: EventType,
    pub version: u16,
    /// Path relative to `schemas/avro/`.
    pub file: &'static str,
    pub source: &'static str,
}

macro_rules! version {
    ($id:literal, $t:ident, $v:literal, $file:literal) => {
        SchemaVersion {
            id: SchemaId($id),
            event_type: EventType::$t,
            version: $v,
            file: $file,
            source: include_str!(concat!("../avro/", $file)),
        }
    };
}

/// Append-only. A new schema version is a new file and a new row with the next id.
pub const TABLE: &[SchemaVersion] = &[
    version!(1, ConversationStarted, 1, "conversation_started/v1.avsc"),
    version!(2, MessageSent, 1, "message_sent/v1.avsc"),
    version!(3, ConversationRenamed, 1, "conversation_renamed/v1.avsc"),
    version!(4, ConversationEnded, 1, "conversation_ended/v1.avsc"),
    version!(5, DocumentGenerated, 1, "document_generated/v1.avsc"),
    version!(6, ConversationStarted, 2, "conversation_started/v2.avsc"),
    version!(
        7,
        KnowledgeDocumentAdded,
        1,
        "knowledge_document_added/v1.avsc"
    ),
    version!(
        8,
        KnowledgeDocumentRemoved,
        1,
        "knowledge_document_removed/v1.avsc"
    ),
    version!(9, MessageSent, 2, "message_sent/v2.avsc"),
    version!(10, ConversationStarted, 3, "conversation_started/v3.avsc"),
    version!(
        11,
        AssistantReplyFailed,
        1,
        "assistant_reply_failed/v1.avsc"
    ),
    version!(
        12,
        AssistantReplyRequested,
        1,
        "assistant_reply_requested/v1.avsc"
    ),
    version!(13, DocumentGenerated, 2, "document_generated/v2.avsc"),
    version!(14, DocumentRequested, 1, "document_requested/v1.avsc"),
    version!(
        15,
        DocumentGenerationFailed,
        1,
        "document_generation_failed/v1.avsc"
    ),
    version!(
        16,
        WebhookEndpointCreated,
        1,
        "webhook_endpoint_created/v1.avsc"
    ),
    version!(
        17,
        WebhookEndpointUpdated,
        1,
        "webhook_endpoint_updated/v1.avsc"
    ),
    version!(
        18,
        WebhookSecretRotated,
        1,
        "webhook_secret_rotated/v1.avsc"
    ),
    version!(
        19,
        WebhookEndpointDisabled,
        1,
        "webhook_endpoint_disabled/v1.avsc"
    ),
    version!(
        20,
        WebhookEndpointEnabled,
        1,
        "webhook_endpoint_enabled/v1.avsc"
    ),
    version!(
        21,
        WebhookEndpointDeleted,
        1,
        "webhook_endpoint_deleted/v1.avsc"
    ),
    version!(
        22,
        WebhookMessageFailed,
        1,
        "webhook_message_failed/v1.avsc"
    ),
    version!(
        23,
        WebhookRedeliveryRequested,
        1,
        "webhook_redelivery_requested/v1.avsc"
    ),
    version!(24, NotificationsRead, 1, "notifications_read/v1.avsc"),
    version!(25, DocumentGenerated, 3, "document_generated/v3.avsc"),
    version!(26, DocumentRequested, 2, "document_requested/v2.avsc"),
    version!(
        27,
        AssistantReplyFailed,
        2,
        "assistant_reply_failed/v2.avsc"
    ),
    version!(28, SubjectErased, 1, "subject_erased/v1.avsc"),
    version!(29, ConversationStarted, 4, "conversation_started/v4.avsc"),
    version!(30, MessageSent, 3, "message_sent/v3.avsc"),
    version!(31, ConversationRenamed, 2, "conversation_renamed/v2.avsc"),
    version!(32, ConversationEnded, 2, "conversation_ended/v2.avsc"),
    version!(
        33,
        AssistantReplyFailed,
        3,
        "assistant_reply_failed/v3.avsc"
    ),
    version!(
        34,
        AssistantReplyRequested,
        2,
        "assistant_reply_requested/v2.avsc"
    ),
    version!(35, DocumentRequested, 3, "document_requested/v3.avsc"),
    version!(36, DocumentGenerated, 4, "document_generated/v4.avsc"),
    version!(
        37,
        DocumentGenerationFailed,
        2,
        "document_generation_failed/v2.avsc"
    ),
    version!(
        38,
        KnowledgeDocumentAdded,
        2,
        "knowledge_document_added/v2.avsc"
    ),
];

pub(crate) struct Parsed {
    pub row: SchemaVersion,
    pub schema: Schema,
}

pub(crate) struct Registry {
    by_id: HashMap<SchemaId, Parsed>,
    latest: HashMap<EventType, SchemaId>,
}

impl Registry {
    pub fn get(&self, id: SchemaId) -> Option<&Parsed> {
        self.by_id.get(&id)
    }

    pub fn latest(&self, event_type: EventType) -> &Parsed {
        let id = self.latest[&event_type];
        &self.by_id[&id]
    }
}

/// The table, parsed once. The schema files are compiled in and covered by tests, so a
/// parse failure here is a build defect, not a runtime condition.
pub(crate) static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut by_id = HashMap::new();
    let mut latest: HashMap<EventType, (u16, SchemaId)> = HashMap::new();
    for row in TABLE {
        let schema = Schema::parse_str(row.source)
            .unwrap_or_else(|e| panic!("schemas/avro/{} does not parse: {e}", row.file));
        let newest = latest
            .entry(row.event_type)
            .or_insert((row.version, row.id));
        if row.version >= newest.0 {
            *newest = (row.version, row.id);
        }
        by_id.insert(row.id, Parsed { row: *row, schema });
    }
    Registry {
        by_id,
        latest: latest.into_iter().map(|(t, (_, id))| (t, id)).collect(),
    }
});

/// The latest schema version of an event type.
pub fn latest(event_type: EventType) -> SchemaVersion {
    REGISTRY.latest(event_type).row
}

/// Every version of one event type, oldest first.
pub fn versions(event_type: EventType) -> Vec<SchemaVersion> {
    let mut rows: Vec<_> = TABLE
        .iter()
        .filter(|r| r.event_type == event_type)
        .copied()
        .collect();
    rows.sort_by_key(|r| r.version);
    rows
}
