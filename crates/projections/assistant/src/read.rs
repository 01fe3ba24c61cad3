//! What the assistant reads, straight from the event store (never from a read model,
//! which may lag or be rebuilding): a conversation's state, which says whether a message
//! still waits for its reply, with its messages in order; a document's state, which says
//! whether it still waits for its generator.

use cqrs_es::Aggregate;
use domain::{Conversation, ConversationEvent, Document, DocumentEvent};
use event_store::log;
use schemas::AggregateKind;
use sqlx::PgPool;
use uuid::Uuid;

use crate::prompt::Said;

/// A message of the conversation with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: Uuid,
    pub said: Said,
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub state: Conversation,
    /// Oldest first.
    pub messages: Vec<Message>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a stored event does not decode: {0}")]
    Decode(String),
}

/// Reads the whole stream of `id` (empty state when it does not exist).
pub async fn load(pool: &PgPool, id: Uuid) -> Result<Loaded, LoadError> {
    const PAGE: i64 = 500;
    let aggregate_id = id.to_string();
    let mut loaded = Loaded::default();
    let mut after = 0;
    loop {
        let page = log::aggregate_events(
            pool,
            AggregateKind::Conversation.as_str(),
            &aggregate_id,
            after + 1..=after + PAGE,
        )
        .await?;
        let Some(last) = page.last() else { break };
        after = last.sequence;
        for stored in page {
            // The stored payload is the aggregate's own serde form.
            let event: ConversationEvent = serde_json::from_value(stored.payload)
                .map_err(|e| LoadError::Decode(e.to_string()))?;
            if let ConversationEvent::MessageSent(m) = &event {
                loaded.messages.push(Message {
                    id: m.message_id,
                    said: Said {
                        role: m.role,
                        content: m.content.clone(),
                    },
                });
            }
            loaded.state.apply(event);
        }
    }
    Ok(loaded)
}

/// The state of document `id` (the default state when it does not exist).
pub async fn document(pool: &PgPool, id: Uuid) -> Result<Document, LoadError> {
    let mut state = Document::default();
    let events = log::aggregate_events(
        pool,
        AggregateKind::Document.as_str(),
        &id.to_string(),
        1..=i64::MAX,
    )
    .await?;
    for stored in events {
        let event: DocumentEvent =
            serde_json::from_value(stored.payload).map_err(|e| LoadError::Decode(e.to_string()))?;
        state.apply(event);
    }
    Ok(state)
}
