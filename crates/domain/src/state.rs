//! The public view of an aggregate's state: what the audit API shows for "state as of a
//! version or a time". Field names and values follow the read models (`"status":"open"`),
//! so the internal aggregate types can change without changing the API.

use serde::Serialize;
use uuid::Uuid;

use crate::conversation::{Conversation, Status};
use crate::document::Document;
use crate::inbox::Inbox;
use crate::knowledge::Knowledge;
use crate::subject::SubjectRecord;
use crate::webhook::WebhookEndpoint;

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

/// A webhook endpoint as auditors see it: where it pointed and what it took, never its
/// secret (not even sealed), only whether one was rotated out and until when it signed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookEndpointState {
    pub endpoint_id: Option<Uuid>,
    pub tenant_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub deleted: bool,
    pub created_by: String,
    pub previous_secret_valid_until: Option<chrono::DateTime<chrono::Utc>>,
    pub version: u64,
}

impl From<&WebhookEndpoint> for WebhookEndpointState {
    fn from(w: &WebhookEndpoint) -> Self {
        WebhookEndpointState {
            endpoint_id: w.id,
            tenant_id: w.tenant_id.clone(),
            url: w.url.clone(),
            event_types: w.event_types.clone(),
            description: w.description.clone(),
            enabled: w.enabled,
            deleted: w.deleted,
            created_by: w.created_by.clone(),
            previous_secret_valid_until: w.previous_secret.as_ref().map(|p| p.valid_until),
            version: w.version.0,
        }
    }
}

/// A user's inbox: whose it is and how many notifications they marked read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboxState {
    pub inbox_id: Option<Uuid>,
    pub tenant_id: String,
    pub user_id: String,
    pub read: u64,
    pub version: u64,
}

impl From<&Inbox> for InboxState {
    fn from(i: &Inbox) -> Self {
        InboxState {
            inbox_id: i.id,
            tenant_id: i.tenant_id.clone(),
            user_id: i.user_id.clone(),
            read: i.read,
            version: i.version.0,
        }
    }
}

/// The erasure record of a subject: which subject and how often it was erased.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubjectState {
    pub subject_id: Option<Uuid>,
    pub tenant_id: String,
    pub subject: String,
    pub erasures: u64,
    pub version: u64,
}

impl From<&SubjectRecord> for SubjectState {
    fn from(s: &SubjectRecord) -> Self {
        SubjectState {
            subject_id: s.id,
            tenant_id: s.tenant_id.clone(),
            subject: s.subject.clone(),
            erasures: s.erasures,
            version: s.version.0,
        }
    }
}
