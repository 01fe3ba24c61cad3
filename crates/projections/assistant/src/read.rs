//! What the assistant reads, straight from the event store (never from a read model,
//! which may lag or be rebuilding): a conversation's state, which says whether a message
//! still waits for its reply, with its messages in order; a document's state, which says
//! whether it still waits for its generator.

use cqrs_es::Aggregate;
use domain::{Conversation, ConversationEvent, Document};
use event_store::{Reader, Stream, StreamError};
use schemas::AggregateKind;
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

/// Reads the whole stream of `id` (empty state when it does not exist).
pub async fn load(store: &Reader, id: Uuid) -> Result<Loaded, StreamError> {
    let mut loaded = Loaded::default();
    let mut stream = Stream::new(store, AggregateKind::Conversation, id);
    while let Some(page) = stream.next_page().await? {
        for recorded in page {
            // The stored payload is the aggregate's own serde form.
            let event: ConversationEvent = recorded.decode()?;
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
pub async fn document(store: &Reader, id: Uuid) -> Result<Document, StreamError> {
    Stream::new(store, AggregateKind::Document, id).fold().await
}
