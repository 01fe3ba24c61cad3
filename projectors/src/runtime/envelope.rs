//! One event as a projector sees it, whether it came from Kafka or from the event store.

use chrono::{DateTime, TimeZone, Utc};
use command_api::store::StoredEvent;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use schemas::Event;
use thiserror::Error;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub event: Event,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub tenant_id: String,
    pub recorded_at: DateTime<Utc>,
    /// Correlation id and W3C trace context of the request that caused the event.
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
}

/// Where an event sits in its aggregate's stream: enough to park it even when its value
/// cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_id: Option<Uuid>,
}

#[derive(Debug, Error)]
pub enum EnvelopeError {
    #[error("header {0} is missing or invalid")]
    Header(&'static str),
    #[error("value does not decode: {0}")]
    Decode(String),
}

/// A header's value as text, if present and UTF-8.
pub fn header<'a>(msg: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    msg.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The stream position from a record's key and headers.
pub fn position_of(msg: &BorrowedMessage<'_>) -> Result<StreamPosition, EnvelopeError> {
    let aggregate_id = msg
        .key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or(EnvelopeError::Header("key"))?
        .to_owned();
    Ok(StreamPosition {
        aggregate_type: header(msg, "aggregate_type")
            .ok_or(EnvelopeError::Header("aggregate_type"))?
            .to_owned(),
        aggregate_id,
        sequence: header(msg, "sequence")
            .and_then(|s| s.parse().ok())
            .ok_or(EnvelopeError::Header("sequence"))?,
        event_id: header(msg, "event_id").and_then(|s| s.parse().ok()),
    })
}

impl Envelope {
    /// Decodes a record whose stream position [`position_of`] already read.
    pub fn from_kafka(
        msg: &BorrowedMessage<'_>,
        pos: StreamPosition,
    ) -> Result<Envelope, EnvelopeError> {
        let value = msg
            .payload()
            .ok_or(EnvelopeError::Decode("empty value".into()))?;
        let event = Event::decode(value).map_err(|e| EnvelopeError::Decode(e.to_string()))?;
        let recorded_at = header(msg, "recorded_at_ms")
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .ok_or(EnvelopeError::Header("recorded_at_ms"))?;
        Ok(Envelope {
            event,
            event_id: pos.event_id.ok_or(EnvelopeError::Header("event_id"))?,
            aggregate_type: pos.aggregate_type,
            aggregate_id: pos.aggregate_id,
            sequence: pos.sequence,
            tenant_id: header(msg, "tenant_id")
                .ok_or(EnvelopeError::Header("tenant_id"))?
                .to_owned(),
            recorded_at,
            correlation_id: header(msg, "correlation_id").map(str::to_owned),
            traceparent: header(msg, "traceparent").map(str::to_owned),
        })
    }

    pub fn from_store(e: StoredEvent) -> Result<Envelope, EnvelopeError> {
        let event: Event = serde_json::from_value(e.payload.clone())
            .map_err(|err| EnvelopeError::Decode(err.to_string()))?;
        Ok(Envelope {
            event,
            correlation_id: e.meta("correlation_id").map(str::to_owned),
            traceparent: e.meta("traceparent").map(str::to_owned),
            event_id: e.event_id,
            tenant_id: e
                .meta("tenant_id")
                .ok_or(EnvelopeError::Header("tenant_id"))?
                .to_owned(),
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            recorded_at: e.recorded_at,
        })
    }
}
