//! One event as a projection sees it, whether it came from Kafka or from the event store.

use chrono::{DateTime, Utc};
use event_store::StoredEvent;
use schemas::{CommitPosition, Event, EventHeaders};
use thiserror::Error;
use uuid::Uuid;

/// An event and where it sits: its aggregate's stream, its sequence there, its place in
/// the committed global order, and the request that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub event: Event,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub commit_position: CommitPosition,
    pub tenant_id: String,
    /// The caller whose command appended the event, by their id (`[erased]` once they
    /// are erased), as the store's one reader resolves [`Envelope::actor`].
    pub user_id: Option<String>,
    /// The same caller as stored: with data protection on, their pseudonym, which names
    /// the same person in every event and nobody once they are erased (what counts
    /// people, not who they are, keeps this).
    pub actor: Option<String>,
    pub recorded_at: DateTime<Utc>,
    /// Correlation id and W3C trace context of the request that caused the event.
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
    /// Its personal fields read as erased (their key is gone): what a projection derives
    /// from them (an index, a summary) is not derived.
    pub erased: bool,
}

/// Where an event sits in its aggregate's stream: enough to skip, queue or park it, even
/// when its value cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventRef {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_id: Option<Uuid>,
}

impl EventRef {
    /// The aggregate's stream: `(aggregate_type, aggregate_id)`.
    pub fn stream(&self) -> (&str, &str) {
        (&self.aggregate_type, &self.aggregate_id)
    }
}

#[derive(Debug, Error)]
pub enum EnvelopeError {
    #[error(transparent)]
    Header(#[from] schemas::headers::BadHeader),
    #[error("value does not decode: {0}")]
    Decode(String),
}

impl Envelope {
    /// An event from a Kafka record's headers and value (the record key is the aggregate id).
    pub fn from_record(
        headers: EventHeaders,
        aggregate_id: String,
        value: &[u8],
    ) -> Result<Envelope, EnvelopeError> {
        let event = Event::decode(value).map_err(|e| EnvelopeError::Decode(e.to_string()))?;
        Ok(Envelope {
            event,
            event_id: headers.event_id,
            aggregate_type: headers.aggregate_type,
            aggregate_id,
            sequence: headers.sequence,
            commit_position: headers.commit_position,
            tenant_id: headers.tenant_id,
            actor: headers.user_id.clone(),
            user_id: headers.user_id,
            recorded_at: headers.recorded_at,
            correlation_id: headers.correlation_id,
            traceparent: headers.traceparent,
            erased: false,
        })
    }

    /// An event as the event store has it: the source of truth.
    pub fn from_store(e: StoredEvent) -> Result<Envelope, EnvelopeError> {
        let event = e
            .event()
            .map_err(|err| EnvelopeError::Decode(err.to_string()))?;
        let meta = |key: &str| e.meta(key).map(str::to_owned);
        Ok(Envelope {
            event,
            correlation_id: meta("correlation_id"),
            traceparent: meta("traceparent"),
            user_id: meta("user_id"),
            actor: meta("user_id"),
            tenant_id: meta("tenant_id").ok_or(EnvelopeError::Header(
                schemas::headers::BadHeader(schemas::headers::TENANT_ID),
            ))?,
            event_id: e.event_id,
            commit_position: e.position,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            recorded_at: e.recorded_at,
            erased: false,
        })
    }

    pub fn event_ref(&self) -> EventRef {
        EventRef {
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence,
            event_id: Some(self.event_id),
        }
    }
}
