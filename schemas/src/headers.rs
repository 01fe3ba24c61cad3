//! The Kafka headers of a published event: their names, and [`EventHeaders`], the typed
//! set the relay writes and consumers read. Consumers need them to de-duplicate the
//! at-least-once deliveries (`event_id`, or `aggregate_type` + key + `sequence`) and to
//! continue the trace of the request that caused the event (`traceparent`).
//!
//! This module only names and converts; reading and writing rdkafka headers is the
//! `kafka` crate's job, so the contract links no Kafka client.

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use crate::positions::CommitPosition;

/// `application/vnd.confluent.avro`: the value is Avro in the Confluent wire format.
pub const CONTENT_TYPE: &str = "content-type";
pub const EVENT_TYPE: &str = "event_type";
/// Unique per event; a re-delivered event keeps it.
pub const EVENT_ID: &str = "event_id";
/// `conversation` or `document`; with the record key (the aggregate id) it names the stream.
pub const AGGREGATE_TYPE: &str = "aggregate_type";
/// The event's place in its aggregate's stream: 1, 2, 3, ... without gaps.
pub const SEQUENCE: &str = "sequence";
/// The event store's global position (the second half of `commit_position`).
pub const GLOBAL_POSITION: &str = "global_position";
/// [`CommitPosition`] text: the committed global order, `<tx_id>.<global_position>`.
pub const COMMIT_POSITION: &str = "commit_position";
/// When the event store recorded the event, milliseconds since the Unix epoch.
pub const RECORDED_AT_MS: &str = "recorded_at_ms";
pub const TENANT_ID: &str = "tenant_id";
pub const USER_ID: &str = "user_id";
pub const CORRELATION_ID: &str = "correlation_id";
pub const CAUSATION_ID: &str = "causation_id";
/// W3C trace context of the request that caused the event.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Added to a record copied to a dead-letter topic: why it was parked, by which
/// projector, and where it came from (`<topic>/<partition>/<offset>`).
pub const DLQ_ERROR: &str = "dlq_error";
pub const DLQ_PROJECTOR: &str = "dlq_projector";
pub const DLQ_SOURCE: &str = "dlq_source";

/// The value of [`CONTENT_TYPE`].
pub const AVRO_CONTENT_TYPE: &str = "application/vnd.confluent.avro";

/// Every header of a published event, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHeaders {
    pub event_type: String,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub sequence: i64,
    pub commit_position: CommitPosition,
    pub recorded_at: DateTime<Utc>,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// A header that a consumer needs is absent or does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHeader(pub &'static str);

impl fmt::Display for BadHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "header {} is missing or invalid", self.0)
    }
}

impl std::error::Error for BadHeader {}

impl EventHeaders {
    /// Name and value of every header, in the order the relay writes them.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (CONTENT_TYPE, AVRO_CONTENT_TYPE.to_owned()),
            (EVENT_TYPE, self.event_type.clone()),
            (EVENT_ID, self.event_id.to_string()),
            (AGGREGATE_TYPE, self.aggregate_type.clone()),
            (SEQUENCE, self.sequence.to_string()),
            (GLOBAL_POSITION, self.commit_position.global.to_string()),
            (COMMIT_POSITION, self.commit_position.to_string()),
            (
                RECORDED_AT_MS,
                self.recorded_at.timestamp_millis().to_string(),
            ),
            (TENANT_ID, self.tenant_id.clone()),
        ];
        let optional = [
            (USER_ID, &self.user_id),
            (CORRELATION_ID, &self.correlation_id),
            (CAUSATION_ID, &self.causation_id),
            (TRACEPARENT, &self.traceparent),
            (TRACESTATE, &self.tracestate),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                pairs.push((name, v.clone()));
            }
        }
        pairs
    }

    /// Reads the headers through `get` (a header's value by name, as text).
    pub fn read<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<EventHeaders, BadHeader> {
        let required = |name: &'static str| get(name).ok_or(BadHeader(name));
        let parsed = |name: &'static str| -> Result<i64, BadHeader> {
            required(name)?.parse().map_err(|_| BadHeader(name))
        };
        let optional = |name: &str| get(name).map(str::to_owned);
        Ok(EventHeaders {
            event_type: required(EVENT_TYPE)?.to_owned(),
            event_id: required(EVENT_ID)?
                .parse()
                .map_err(|_| BadHeader(EVENT_ID))?,
            aggregate_type: required(AGGREGATE_TYPE)?.to_owned(),
            sequence: parsed(SEQUENCE)?,
            commit_position: required(COMMIT_POSITION)?
                .parse()
                .map_err(|_| BadHeader(COMMIT_POSITION))?,
            recorded_at: Utc
                .timestamp_millis_opt(parsed(RECORDED_AT_MS)?)
                .single()
                .ok_or(BadHeader(RECORDED_AT_MS))?,
            tenant_id: required(TENANT_ID)?.to_owned(),
            user_id: optional(USER_ID),
            correlation_id: optional(CORRELATION_ID),
            causation_id: optional(CAUSATION_ID),
            traceparent: optional(TRACEPARENT),
            tracestate: optional(TRACESTATE),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_their_text_pairs() {
        let h = EventHeaders {
            event_type: "MessageSent".into(),
            event_id: Uuid::new_v4(),
            aggregate_type: "conversation".into(),
            sequence: 7,
            commit_position: CommitPosition {
                tx_id: 812,
                global: 90,
            },
            recorded_at: Utc.timestamp_millis_opt(1_764_000_000_123).unwrap(),
            tenant_id: "acme".into(),
            user_id: Some("u1".into()),
            correlation_id: Some("corr".into()),
            causation_id: None,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            tracestate: None,
        };
        let pairs = h.to_pairs();
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get(GLOBAL_POSITION), Some("90"));
        assert_eq!(EventHeaders::read(get), Ok(h));
        let without_sequence = |name: &str| if name == SEQUENCE { None } else { get(name) };
        assert_eq!(
            EventHeaders::read(without_sequence),
            Err(BadHeader(SEQUENCE))
        );
    }
}
