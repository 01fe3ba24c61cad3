//! The outbox relay: publishes every committed event to Kafka, in commit order.
//!
//! * One active relay across replicas: the one holding a PostgreSQL advisory lock on a
//!   dedicated connection. The others wait; if the holder dies its session ends and the
//!   lock passes on.
//! * Reads the events table in committed order (`event_store::log`), publishes each event to the
//!   topic of its aggregate type, keyed by aggregate id, Avro in Confluent framing, with
//!   headers; idempotent producer, `acks=all`.
//! * Saves its cursor only after the broker acknowledged every record of a batch, on the
//!   lock's own connection (a relay that lost the lock cannot move the cursor). A crash
//!   re-publishes at most one batch: duplicates carry the same `event_id` header.

use std::time::Duration;

use event_store::{StoredEvent, log, outbox};
use futures::future::join_all;
use kafka::{KafkaConfig, KafkaSetupError};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{AggregateKind, CommitPosition};
use sqlx::{Connection, PgConnection};
use thiserror::Error;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Cursor name; one per relay deployment (`RELAY_NAME`, default `kafka`).
    pub name: String,
    pub database_url: String,
    pub kafka: KafkaConfig,
    /// Events per read and publish round (`RELAY_BATCH_SIZE`, default 500).
    pub batch_size: i64,
    /// Sleep when there is nothing to publish (`RELAY_IDLE_POLL_MS`, default 20).
    pub idle_poll: Duration,
}

#[derive(Debug, Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error("publishing event {event_id} failed: {reason}")]
    Publish {
        event_id: uuid::Uuid,
        reason: String,
    },
    #[error("stored event {event_id} ({event_type}) cannot be published: {reason}")]
    Unpublishable {
        event_id: uuid::Uuid,
        event_type: String,
        reason: String,
    },
}

/// Progress and lag, as last measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RelayStatus {
    /// This relay holds the leadership lock and publishes.
    pub active: bool,
    /// Another relay holds the lock; this one waits to take over.
    pub standby: bool,
    pub cursor: CommitPosition,
    pub published: u64,
    pub lag_events: i64,
    pub lag_seconds: f64,
}

pub struct Relay {
    config: RelayConfig,
    status: watch::Sender<RelayStatus>,
}

impl Relay {
    pub fn new(config: RelayConfig) -> (Self, watch::Receiver<RelayStatus>) {
        let (status, rx) = watch::channel(RelayStatus::default());
        (Self { config, status }, rx)
    }

    /// Runs until `shutdown` flips to true. Failures are logged and retried with backoff,
    /// from the saved cursor.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            tokio::select! {
                result = self.lead() => match result {
                    Ok(()) => return,
                    Err(e) => {
                        self.status.send_modify(|s| s.active = false);
                        tracing::error!(error = %e, "relay failed; restarting from the saved cursor");
                    }
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Waits for the lock, then publishes until an error.
    async fn lead(&self) -> Result<(), RelayError> {
        let mut conn = PgConnection::connect(&self.config.database_url).await?;
        let mut waiting_logged = false;
        while !outbox::try_lead(&mut conn).await? {
            if !waiting_logged {
                tracing::info!("another relay is active; standing by");
                self.status.send_modify(|s| s.standby = true);
                waiting_logged = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tracing::info!(name = %self.config.name, "relay is active");
        let kafka = &self.config.kafka;
        let topics: Vec<String> = AggregateKind::ALL
            .iter()
            .map(|k| k.topic(&kafka.topic_prefix))
            .collect();
        kafka.ensure_topics(&topics).await?;
        let producer = kafka.producer(&format!("relay-{}", self.config.name))?;

        let (mut cursor, mut published) = outbox::load_cursor(&mut conn, &self.config.name).await?;
        self.status.send_modify(|s| {
            s.active = true;
            s.standby = false;
            s.cursor = cursor;
            s.published = published;
        });

        let mut last_lag = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            let batch = log::read_after(&mut conn, cursor, self.config.batch_size).await?;
            if let Some(last) = batch.last() {
                self.publish(&producer, &batch).await?;
                let next = last.position;
                outbox::save_cursor(&mut conn, &self.config.name, next, batch.len() as u64).await?;
                cursor = next;
                published += batch.len() as u64;
                metrics::counter!("relay_published_events_total").increment(batch.len() as u64);
            }
            if batch.is_empty() || last_lag.elapsed() >= Duration::from_secs(1) {
                let (lag_events, lag_seconds) = log::lag(&mut conn, cursor).await?;
                metrics::gauge!("relay_lag_events").set(lag_events as f64);
                metrics::gauge!("relay_lag_seconds").set(lag_seconds);
                self.status.send_modify(|s| {
                    *s = RelayStatus {
                        active: true,
                        standby: false,
                        cursor,
                        published,
                        lag_events,
                        lag_seconds,
                    }
                });
                last_lag = std::time::Instant::now();
            }
            if batch.is_empty() {
                tokio::time::sleep(self.config.idle_poll).await;
            }
        }
    }

    /// Sends every event of the batch, then waits for all acknowledgements. The idempotent
    /// producer keeps per-partition order across the in-flight records.
    async fn publish(
        &self,
        producer: &FutureProducer,
        batch: &[StoredEvent],
    ) -> Result<(), RelayError> {
        let prefix = &self.config.kafka.topic_prefix;
        let mut records = Vec::with_capacity(batch.len());
        for e in batch {
            let unpublishable = |reason: String| RelayError::Unpublishable {
                event_id: e.event_id,
                event_type: e.event_type.clone(),
                reason,
            };
            let kind = AggregateKind::parse(&e.aggregate_type).ok_or_else(|| {
                unpublishable(format!("unknown aggregate type {}", e.aggregate_type))
            })?;
            let event = e.event().map_err(|err| unpublishable(err.to_string()))?;
            let value = event
                .encode()
                .map_err(|err| unpublishable(err.to_string()))?;
            records.push((
                kind.topic(prefix),
                value,
                kafka::headers::to_owned_headers(&e.headers()),
            ));
        }
        let deliveries: Vec<_> = batch
            .iter()
            .zip(&records)
            .map(|(e, (topic, value, headers))| {
                let record = FutureRecord::to(topic)
                    .key(e.aggregate_id.as_str())
                    .payload(value.as_slice())
                    .headers(headers.clone());
                producer.send(record, Duration::from_secs(30))
            })
            .collect();
        for (e, result) in batch.iter().zip(join_all(deliveries).await) {
            if let Err((err, _)) = result {
                return Err(RelayError::Publish {
                    event_id: e.event_id,
                    reason: err.to_string(),
                });
            }
        }
        Ok(())
    }
}
