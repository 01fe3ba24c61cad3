//! The outbox relay: publishes every committed event to Kafka, in commit order.
//!
//! * One active relay across replicas: the one holding a PostgreSQL advisory lock on a
//!   dedicated connection. The others wait; if the holder dies its session ends and the
//!   lock passes on.
//! * Reads the events table in committed order (`store::log`), publishes each event to the
//!   topic of its aggregate type, keyed by aggregate id, Avro in Confluent framing, with
//!   headers; idempotent producer, `acks=all`.
//! * Saves its cursor only after the broker acknowledged every record of a batch, on the
//!   lock's own connection (a relay that lost the lock cannot move the cursor). A crash
//!   re-publishes at most one batch: duplicates carry the same `event_id` header.

use std::time::Duration;

use futures::future::join_all;
use platform::kafka::{KafkaConfig, KafkaSetupError};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{AggregateKind, Event};
use sqlx::{Connection, PgConnection, Row};
use thiserror::Error;
use tokio::sync::watch;

use crate::store::log::{self, Position, StoredEvent};

/// Key of the advisory lock that elects the active relay.
const LOCK_KEY: i64 = 0x7468_7265_6164; // "thread"

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
    pub active: bool,
    pub cursor: Position,
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
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut conn)
                .await?;
            if locked {
                break;
            }
            if !waiting_logged {
                tracing::info!("another relay is active; standing by");
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

        sqlx::query("INSERT INTO relay_cursor (name, tx_id, global_position) VALUES ($1, '0'::xid8, 0) ON CONFLICT DO NOTHING")
            .bind(&self.config.name)
            .execute(&mut conn)
            .await?;
        let row = sqlx::query("SELECT tx_id::text AS tx_id, global_position, published FROM relay_cursor WHERE name = $1")
            .bind(&self.config.name)
            .fetch_one(&mut conn)
            .await?;
        let tx: String = row.try_get("tx_id")?;
        let mut cursor = Position {
            tx_id: tx.parse().map_err(|e| sqlx::Error::ColumnDecode {
                index: "tx_id".into(),
                source: Box::new(e),
            })?,
            global: row.try_get("global_position")?,
        };
        let mut published = row.try_get::<i64, _>("published")? as u64;
        self.status.send_modify(|s| {
            s.active = true;
            s.cursor = cursor;
            s.published = published;
        });

        let mut last_lag = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            let batch = log::read_after(&mut conn, cursor, self.config.batch_size).await?;
            if let Some(last) = batch.last() {
                self.publish(&producer, &batch).await?;
                let next = last.position;
                sqlx::query(
                    "UPDATE relay_cursor SET tx_id = $2::text::xid8, global_position = $3, \
                     published = published + $4, updated_at = now() WHERE name = $1",
                )
                .bind(&self.config.name)
                .bind(next.tx_id.to_string())
                .bind(next.global)
                .bind(batch.len() as i64)
                .execute(&mut conn)
                .await?;
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
            let event: Event = serde_json::from_value(e.payload.clone())
                .map_err(|err| unpublishable(err.to_string()))?;
            let value = event
                .encode()
                .map_err(|err| unpublishable(err.to_string()))?;
            records.push((kind.topic(prefix), value, headers(e)));
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

/// Kafka headers of a published event.
pub fn headers(e: &StoredEvent) -> OwnedHeaders {
    let sequence = e.sequence.to_string();
    let position = e.position.global.to_string();
    let commit_position = e.position.to_string();
    let event_id = e.event_id.to_string();
    let recorded = e.recorded_at.timestamp_millis().to_string();
    let mut h = OwnedHeaders::new_with_capacity(14);
    let fixed: [(&str, &str); 8] = [
        ("content-type", "application/vnd.confluent.avro"),
        ("event_type", &e.event_type),
        ("event_id", &event_id),
        ("aggregate_type", &e.aggregate_type),
        ("sequence", &sequence),
        ("global_position", &position),
        ("commit_position", &commit_position),
        ("recorded_at_ms", &recorded),
    ];
    for (key, value) in fixed {
        h = h.insert(Header {
            key,
            value: Some(value),
        });
    }
    for key in [
        "tenant_id",
        "correlation_id",
        "causation_id",
        "user_id",
        "traceparent",
        "tracestate",
    ] {
        if let Some(value) = e.meta(key) {
            h = h.insert(Header {
                key,
                value: Some(value),
            });
        }
    }
    h
}
