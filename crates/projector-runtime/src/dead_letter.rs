//! The dead-letter topic: a copy of each parked record, with why it was parked, for
//! operators and alerting. The parked table, not this topic, is what re-drive reads.

use std::time::Duration;

use kafka::KafkaConfig;
use projection::Sink;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use schemas::headers as h;

use crate::Core;

/// The dead-letter topic of a projection: `<prefix>dlq.<name>`.
pub fn dead_letter_topic(kafka: &KafkaConfig, projection: &str) -> String {
    format!("{}dlq.{projection}", kafka.topic_prefix)
}

/// Copies `msg` to the dead-letter topic with `dlq_error`, `dlq_projector`, `dlq_source`.
pub(crate) async fn send<S: Sink, M: Message>(runtime: &Core<S>, msg: &M, error: &str) {
    let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
    let headers = kafka::headers::with_extra(
        msg,
        &[
            (h::DLQ_ERROR, error),
            (h::DLQ_PROJECTOR, runtime.sink.name()),
            (h::DLQ_SOURCE, &source),
        ],
    );
    let mut record = FutureRecord::to(&runtime.dlq).headers(headers);
    if let Some(key) = msg.key() {
        record = record.key(key);
    }
    if let Some(value) = msg.payload() {
        record = record.payload(value);
    }
    match runtime.producer.send(record, Duration::from_secs(30)).await {
        Ok(_) => runtime.status.send_modify(|s| s.dead_lettered += 1),
        Err((e, _)) => {
            tracing::error!(error = %e, %source, "dead-lettering failed; the event stays parked")
        }
    }
}
