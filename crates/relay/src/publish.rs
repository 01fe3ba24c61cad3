//! Handing a batch of stored events to the producer, in order.
//!
//! Records are enqueued one after another: when the producer's queue is full, the relay
//! waits and enqueues the same record again before any later one, so no setting of the
//! queue, the batch size or `max.in.flight` lets a later record of a key overtake an
//! earlier one. (The idempotent producer keeps the order of what was enqueued.) Only then
//! are the acknowledgements awaited.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use event_store::StoredEvent;
use kafka::KafkaConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::AggregateKind;

use crate::RelayError;

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Published,
    /// Not published, with why: it cannot be (does not encode, too large), or an earlier
    /// event of its aggregate is parked.
    Parked(String),
}

pub(crate) const WAITING: &str = "waiting behind a parked event";

/// How long a record may wait for room in a full producer queue before the round fails.
const QUEUE_WAIT: Duration = Duration::from_secs(30);

struct Record {
    topic: String,
    value: Vec<u8>,
    headers: rdkafka::message::OwnedHeaders,
}

/// The record of a stored event, or why it cannot be published.
fn prepare(kafka: &KafkaConfig, e: &StoredEvent) -> Result<Record, String> {
    let kind = AggregateKind::parse(&e.aggregate_type)
        .ok_or_else(|| format!("unknown aggregate type {}", e.aggregate_type))?;
    let event = e
        .event()
        .map_err(|err| format!("payload does not decode: {err}"))?;
    let value = event
        .encode()
        .map_err(|err| format!("does not encode: {err}"))?;
    let headers = e.headers();
    let size = value.len()
        + e.aggregate_id.len()
        + headers
            .to_pairs()
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > kafka.message_max_bytes {
        return Err(format!(
            "record of {size} bytes exceeds KAFKA_MESSAGE_MAX_BYTES ({})",
            kafka.message_max_bytes
        ));
    }
    Ok(Record {
        topic: kind.topic(&kafka.topic_prefix),
        value,
        headers: kafka::headers::to_owned_headers(&headers),
    })
}

/// Publishes `batch`; events of the streams in `blocked`, and the later events of any
/// stream one of whose events cannot be published, are left out as parked.
pub(crate) async fn publish(
    kafka: &KafkaConfig,
    producer: &FutureProducer,
    batch: &[StoredEvent],
    blocked: &HashSet<(String, String)>,
) -> Result<Vec<Outcome>, RelayError> {
    let mut blocked = blocked.clone();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut deliveries = Vec::with_capacity(batch.len());
    for e in batch {
        let stream = (e.aggregate_type.clone(), e.aggregate_id.clone());
        if blocked.contains(&stream) {
            outcomes.push(Outcome::Parked(WAITING.to_owned()));
            continue;
        }
        let record = match prepare(kafka, e) {
            Ok(record) => record,
            Err(reason) => {
                blocked.insert(stream);
                outcomes.push(Outcome::Parked(reason));
                continue;
            }
        };
        let mut next = FutureRecord::to(&record.topic)
            .key(e.aggregate_id.as_str())
            .payload(record.value.as_slice())
            .headers(record.headers.clone());
        let waited = Instant::now();
        let delivery = loop {
            match producer.send_result(next) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if waited.elapsed() < QUEUE_WAIT =>
                {
                    // Room comes as earlier records are acknowledged; this one goes next.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    next = back;
                }
                Err((err, _)) => {
                    return Err(RelayError::Publish {
                        event_id: e.event_id,
                        reason: err.to_string(),
                    });
                }
            }
        };
        deliveries.push((e.event_id, delivery));
        outcomes.push(Outcome::Published);
    }
    for (event_id, delivery) in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((err, _))) => {
                return Err(RelayError::Publish {
                    event_id,
                    reason: err.to_string(),
                });
            }
            Err(_) => {
                return Err(RelayError::Publish {
                    event_id,
                    reason: "the producer went away before acknowledging".into(),
                });
            }
        }
    }
    Ok(outcomes)
}
