//! Kafka client setup, in one place for every producer and consumer, and the contract's
//! headers on rdkafka records ([`headers`]).
//!
//! The code speaks plain Kafka through rdkafka, so it runs unchanged on Apache Kafka,
//! Redpanda, a managed cluster, or the nisshi broker `dev/stack` starts locally. Only the
//! crates that produce or consume depend on this one, so nothing else links librdkafka.

pub mod headers;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use thiserror::Error;

use common::config;

#[derive(Debug, Error)]
pub enum KafkaSetupError {
    #[error("creating a Kafka client failed: {0}")]
    Client(#[from] KafkaError),
    #[error("creating topic {topic} failed: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("KAFKA_PROPERTIES entry {0:?} is not key=value")]
    Property(String),
}

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Kafka")]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]` (`dev/stack` sets it).
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS")]
    pub brokers: String,
    /// Topics are `<prefix><aggregate>.events`.
    #[arg(
        long = "kafka-topic-prefix",
        env = "KAFKA_TOPIC_PREFIX",
        default_value = "threadline."
    )]
    pub topic_prefix: String,
    /// Partitions of the topics this deployment creates.
    #[arg(
        long = "kafka-topic-partitions",
        env = "KAFKA_TOPIC_PARTITIONS",
        default_value_t = 6
    )]
    pub partitions: i32,
    /// Replication factor of the topics this deployment creates (use 3 on a real cluster).
    #[arg(
        long = "kafka-replication-factor",
        env = "KAFKA_REPLICATION_FACTOR",
        default_value_t = 1
    )]
    pub replication: i32,
    /// Milliseconds a consumer's fetch waits for data.
    #[arg(
        long = "kafka-fetch-wait-max-ms",
        env = "KAFKA_FETCH_WAIT_MAX_MS",
        default_value_t = 100
    )]
    pub fetch_wait_max_ms: u32,
    /// The largest record the relay sends (an event whose record would be larger is parked;
    /// commands refuse events well below it) and the `max.message.bytes` of topics this
    /// deployment creates.
    #[arg(
        long = "kafka-message-max-bytes",
        env = "KAFKA_MESSAGE_MAX_BYTES",
        default_value_t = 1_000_000
    )]
    pub message_max_bytes: usize,
    /// Milliseconds a record may wait for the broker's acknowledgement, and an admin
    /// request (topic creation) for its answer.
    #[arg(long = "kafka-request-timeout-ms", env = "KAFKA_REQUEST_TIMEOUT_MS", default_value = "30000", value_parser = config::millis)]
    pub request_timeout: Duration,
    /// Extra librdkafka properties, `key=value;key=value` (`security.protocol`, `sasl.*`
    /// for a managed cluster); they cannot weaken the producer's idempotence, `acks=all`
    /// or in-flight limit.
    #[arg(long = "kafka-properties", env = "KAFKA_PROPERTIES", default_value = "", value_parser = properties_setting)]
    pub extra: ::std::vec::Vec<(String, String)>,
}

fn properties_setting(raw: &str) -> Result<Vec<(String, String)>, String> {
    parse_properties(raw).map_err(|e| e.to_string())
}

impl KafkaConfig {
    /// Settings shared by every client, with `KAFKA_PROPERTIES` applied.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id);
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// A producer that neither loses nor reorders records: idempotent, `acks=all`, at
    /// most 5 requests in flight. These are set after `KAFKA_PROPERTIES`, so no extra
    /// property can weaken them.
    pub fn producer(&self, client_id: &str) -> Result<FutureProducer, KafkaSetupError> {
        let mut c = ClientConfig::new();
        // Defaults first, then KAFKA_PROPERTIES (which may tune them), then what order
        // and durability rest on. The relay hands over a whole page of records before it
        // waits for their acknowledgements, so they batch without lingering: a longer
        // linger only delays every round's last record (5 ms cost 5 ms of freshness).
        c.set("linger.ms", "1")
            .set("compression.type", "none")
            .set(
                "message.timeout.ms",
                self.request_timeout.as_millis().to_string(),
            )
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id);
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        Ok(c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("message.max.bytes", self.message_max_bytes.to_string())
            .create()?)
    }

    /// A consumer in `group` that commits offsets only when told to.
    pub fn consumer(
        &self,
        client_id: &str,
        group: &str,
    ) -> Result<StreamConsumer, KafkaSetupError> {
        Ok(self
            .client_config(client_id)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_uncommitted")
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .create()?)
    }

    /// The event topic of every aggregate type under this deployment's prefix.
    pub fn event_topics(&self) -> Vec<String> {
        schemas::AggregateKind::ALL
            .iter()
            .map(|k| k.topic(&self.topic_prefix))
            .collect()
    }

    /// Creates the topics that do not exist yet; existing ones are left as they are.
    pub async fn ensure_topics(&self, topics: &[String]) -> Result<(), KafkaSetupError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config("admin").create()?;
        let max_message_bytes = self.message_max_bytes.to_string();
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.partitions,
                    TopicReplication::Fixed(self.replication),
                )
                .set("max.message.bytes", &max_message_bytes)
            })
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(self.request_timeout))
            .request_timeout(Some(self.request_timeout));
        for result in admin.create_topics(&new, &opts).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(KafkaSetupError::CreateTopic { topic, code }),
            }
        }
        Ok(())
    }
}

fn parse_properties(raw: &str) -> Result<Vec<(String, String)>, KafkaSetupError> {
    raw.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| KafkaSetupError::Property(p.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_and_reject_garbage() {
        let parsed =
            parse_properties("security.protocol=SASL_SSL; sasl.mechanism = PLAIN;").unwrap();
        assert_eq!(
            parsed,
            vec![
                ("security.protocol".into(), "SASL_SSL".into()),
                ("sasl.mechanism".into(), "PLAIN".into())
            ]
        );
        assert!(matches!(
            parse_properties("a=b;oops"),
            Err(KafkaSetupError::Property(p)) if p == "oops"
        ));
    }
}
