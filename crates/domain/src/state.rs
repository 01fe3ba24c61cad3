//! The public view of an aggregate's state: what the audit API shows for "state as of a
//! version or a time". Field names and values follow the read models (`"status":"open"`),
//! so the internal aggregate types can change without changing the API.

use serde::Serialize;
use uuid::Uuid;

use crate::conversation::{Conversation, Status};
use crate::document::Document;
use crate::knowledge::Knowledge;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationState {
    pub conversation_id: Option<Uuid>,
    pub tenant_id: String,
    pub title: String,
    /// `new` (no event yet), `open` or `ended`.
    pub status: &'static str,
    pub message_count: u64,
    pub version: u64,
    /// Who started it (absent before conversations recorded it).
    pub started_by: Option<String>,
}

impl From<&Conversation> for ConversationState {
    fn from(c: &Conversation) -> Self {
        ConversationState {
            conversation_id: c.id,
            tenant_id: c.tenant_id.clone(),
            title: c.title.clone(),
            status: match c.status {
                Status::New => "new",
                Status::Open => "open",
                Status::Ended => "ended",
            },
            message_count: c.message_count,
            version: c.version.0,
            started_by: c.started_by.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentState {
    pub document_id: Option<Uuid>,
    pub tenant_id: String,
    pub conversation_id: Option<Uuid>,
    pub version: u64,
}

impl From<&Document> for DocumentState {
    fn from(d: &Document) -> Self {
        DocumentState {
            document_id: d.id,
            tenant_id: d.tenant_id.clone(),
            conversation_id: d.conversation_id,
            version: d.version.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnowledgeState {
    pub knowledge_id: Option<Uuid>,
    pub tenant_id: String,
    pub title: String,
    pub sha256: String,
    pub removed: bool,
    pub version: u64,
}

impl From<&Knowledge> for KnowledgeState {
    fn from(k: &Knowledge) -> Self {
        KnowledgeState {
            knowledge_id: k.id,
            tenant_id: k.tenant_id.clone(),
            title: k.title.clone(),
            sha256: k.sha256.clone(),
            removed: k.removed,
            version: k.version.0,
        }
    }
}
