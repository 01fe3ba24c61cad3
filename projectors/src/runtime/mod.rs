//! The projector runtime every projector binary shares.
//!
//! For each record: decode the Avro contract, then in one database transaction lock the
//! aggregate's progress row, skip the event if already applied, fill any gap from the
//! event store, apply, advance progress; then commit the Kafka offset. A failing event is
//! retried with backoff; one that keeps failing (or cannot be decoded) is parked and sent
//! to the dead-letter topic, and later events of its aggregate are parked behind it while
//! other aggregates keep flowing. [`redrive`] applies parked events in order once the
//! cause is fixed; [`rebuild`] replays the event store into a fresh generation and
//! switches to it while reads continue.

pub mod apply;
pub mod envelope;
pub mod generation;
mod rebuild;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::kafka::{KafkaConfig, KafkaSetupError};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use schemas::AggregateKind;
use sqlx::{PgConnection, PgPool};
use thiserror::Error;
use tokio::sync::watch;

use apply::{Mode, Outcome};
use envelope::{Envelope, StreamPosition};
pub use rebuild::{RebuildReport, rebuild};

/// A read model or feed built from the event stream.
#[async_trait::async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Consumer-group suffix, generation schema prefix: a lowercase identifier.
    fn name(&self) -> &'static str;

    /// Creates the projection's tables in `schema`, a fresh generation.
    async fn create_tables(&self, db: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error>;

    /// Applies one event. Runs inside the runtime's transaction; must not commit.
    async fn apply(
        &self,
        db: &mut PgConnection,
        schema: &str,
        event: &Envelope,
    ) -> Result<(), ApplyError>;
}

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The projection refuses the event; retrying is unlikely to help.
    #[error("{0}")]
    Rejected(String),
}

impl ApplyError {
    /// Failures of the connection rather than of the event: the database is down,
    /// restarting, overloaded, or a transaction lost a deadlock or serialisation race.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Rejected(_) => false,
            ApplyError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Tls(_) => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    // 08: connection, 40: deadlock/serialisation, 53: resources, 57P: shutdown.
                    ["08", "40", "53", "57P"]
                        .iter()
                        .any(|class| code.starts_with(class))
                }),
                _ => false,
            },
        }
    }
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error("kafka: {0}")]
    Consume(#[from] rdkafka::error::KafkaError),
    #[error("projection {0} has no live generation")]
    NoGeneration(&'static str),
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Consumer group (`PROJECTOR_GROUP`, default `threadline.<name>`).
    pub group: String,
    /// Attempts before an event is parked (`PROJECTOR_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt (`PROJECTOR_RETRY_BACKOFF_MS`, default 100).
    pub backoff: Duration,
    /// How often lag is measured.
    pub lag_interval: Duration,
}

impl Settings {
    pub fn for_projection(name: &str) -> Result<Self, platform::config::ConfigError> {
        use platform::config;
        Ok(Settings {
            group: config::var("PROJECTOR_GROUP").unwrap_or_else(|| format!("threadline.{name}")),
            max_attempts: config::parse_or("PROJECTOR_MAX_ATTEMPTS", 5)?,
            backoff: Duration::from_millis(config::parse_or("PROJECTOR_RETRY_BACKOFF_MS", 100)?),
            lag_interval: Duration::from_secs(2),
        })
    }
}

/// Progress and lag, as last measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ProjectorStatus {
    pub applied: u64,
    pub duplicates: u64,
    pub parked: u64,
    pub dead_lettered: u64,
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// Partitions assigned to this member of the group, as last measured.
    pub assigned_partitions: usize,
}

pub struct Runtime {
    pool: PgPool,
    projection: Arc<dyn Projection>,
    kafka: KafkaConfig,
    settings: Settings,
    status: watch::Sender<ProjectorStatus>,
}

/// The dead-letter topic of a projection.
pub fn dead_letter_topic(kafka: &KafkaConfig, projection: &str) -> String {
    format!("{}dlq.{projection}", kafka.topic_prefix)
}

impl Runtime {
    pub fn new(
        pool: PgPool,
        projection: Arc<dyn Projection>,
        kafka: KafkaConfig,
        settings: Settings,
    ) -> (Self, watch::Receiver<ProjectorStatus>) {
        let (status, rx) = watch::channel(ProjectorStatus::default());
        (
            Runtime {
                pool,
                projection,
                kafka,
                settings,
                status,
            },
            rx,
        )
    }

    /// Consumes until `shutdown` is true, then commits and leaves the group.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), RuntimeError> {
        let name = self.projection.name();
        generation::ensure_live(&self.pool, self.projection.as_ref()).await?;
        let mut topics: Vec<String> = AggregateKind::ALL
            .iter()
            .map(|k| k.topic(&self.kafka.topic_prefix))
            .collect();
        let dlq = dead_letter_topic(&self.kafka, name);
        topics.push(dlq.clone());
        self.kafka.ensure_topics(&topics).await?;
        topics.pop();
        let producer = self.kafka.producer(&format!("{name}-dlq"))?;
        let consumer = Arc::new(self.kafka.consumer(name, &self.settings.group)?);
        let subscribed: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&subscribed)?;
        tracing::info!(projection = name, group = %self.settings.group, "projector consuming");
        // Aborted when this future ends or is dropped, so the consumer (and its group
        // membership) does not outlive the projector.
        let _lag = AbortOnDrop(tokio::spawn(measure_lag(
            Arc::downgrade(&consumer),
            self.status.clone(),
            self.settings.lag_interval,
            name,
        )));

        // Offsets of the records handled so far, committed synchronously on the way out.
        // (Not the consumer's position: a record fetched but not handled must come back.)
        let mut handled_offsets = TopicPartitionList::new();
        let result = loop {
            let msg = tokio::select! {
                msg = consumer.recv() => msg,
                _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            // Logs of this event carry the request's correlation id and trace context.
            let span = event_span(name, &msg);
            let handled = tracing::Instrument::instrument(
                self.handle(&msg, &producer, &dlq, &mut shutdown),
                span,
            );
            // Ends only when shut down while the database is unreachable.
            let Some(()) = handled.await else {
                break Ok(());
            };
            if let Err(e) = consumer.commit_message(&msg, CommitMode::Async) {
                tracing::warn!(error = %e, "offset commit failed; the event may be redelivered and skipped");
            }
            let next = Offset::Offset(msg.offset() + 1);
            let recorded = match handled_offsets.find_partition(msg.topic(), msg.partition()) {
                Some(_) => handled_offsets.set_partition_offset(msg.topic(), msg.partition(), next),
                None => handled_offsets.add_partition_offset(msg.topic(), msg.partition(), next),
            };
            if let Err(e) = recorded {
                tracing::debug!(error = %e, "tracking offset");
            }
        };
        if handled_offsets.count() > 0
            && let Err(e) = consumer.commit(&handled_offsets, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "final offset commit failed; handled events may be redelivered and skipped");
        }
        consumer.unsubscribe();
        tracing::info!(projection = name, "projector stopped");
        result
    }

    /// Applies, retries, or parks one record. `None` if shut down while retrying.
    async fn handle(
        &self,
        msg: &BorrowedMessage<'_>,
        producer: &FutureProducer,
        dlq: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<()> {
        let pos = match envelope::position_of(msg) {
            Ok(p) => p,
            Err(e) => {
                // Without a stream position it cannot be parked: dead-letter it only.
                tracing::error!(error = %e, offset = msg.offset(), "record without stream position");
                self.dead_letter(producer, dlq, msg, &e.to_string()).await;
                return Some(());
            }
        };
        let envelope = Envelope::from_kafka(msg, pos.clone());
        let mut error = String::new();
        if let Ok(event) = &envelope {
            let mut attempt = 0;
            let mut outage = self.settings.backoff;
            while attempt < self.settings.max_attempts {
                match self.try_apply(event, msg.payload()).await {
                    Ok(outcome) => {
                        self.record(outcome, event);
                        return Some(());
                    }
                    // The database is unreachable: not the event's fault. Wait it out
                    // without counting attempts, so an outage parks nothing.
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, "database unavailable; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(outage) => {}
                            _ = shutdown.wait_for(|stop| *stop) => return None,
                        }
                        outage = (outage * 2).min(Duration::from_secs(10));
                    }
                    Err(e) => {
                        attempt += 1;
                        error = e.to_string();
                        tracing::warn!(attempt, error = %e, aggregate = %pos.aggregate_id, sequence = pos.sequence, "apply failed");
                        if attempt < self.settings.max_attempts {
                            let delay = self.settings.backoff * 2u32.pow(attempt - 1);
                            tokio::time::sleep(delay.min(Duration::from_secs(10))).await;
                        }
                    }
                }
            }
        } else if let Err(e) = &envelope {
            error = e.to_string();
        }
        // Keeps failing: park it (the database must take it, so this retries until it does).
        let mut delay = self.settings.backoff;
        loop {
            match self.park(&pos, msg.payload(), &error).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot park event; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return None,
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.dead_letter(producer, dlq, msg, &error).await;
        self.status.send_modify(|s| s.parked += 1);
        metrics::counter!("projector_parked_events_total", "projector" => self.projection.name())
            .increment(1);
        tracing::error!(aggregate = %pos.aggregate_id, sequence = pos.sequence, %error, "event parked and dead-lettered");
        Some(())
    }

    fn record(&self, outcome: Outcome, event: &Envelope) {
        let name = self.projection.name();
        self.status.send_modify(|s| match outcome {
            Outcome::Applied => {
                s.applied += 1;
                s.last_recorded_at = Some(event.recorded_at);
            }
            Outcome::Duplicate => s.duplicates += 1,
            Outcome::Queued => s.parked += 1,
        });
        let label = match outcome {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Queued => "queued",
        };
        metrics::counter!("projector_events_total", "projector" => name, "outcome" => label)
            .increment(1);
    }

    /// One transaction: live generation (shared lock, so a rebuild's switch waits),
    /// progress, apply; an event behind a parked one is parked in the same transaction,
    /// with the record's `raw` value.
    async fn try_apply(&self, event: &Envelope, raw: Option<&[u8]>) -> Result<Outcome, ApplyError> {
        let name = self.projection.name();
        let mut tx = self.pool.begin().await?;
        let schema: String =
            sqlx::query_scalar("SELECT schema_name FROM projections WHERE name = $1 FOR SHARE")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| {
                    ApplyError::Rejected(format!("projection {name} has no live generation"))
                })?;
        let outcome = apply::apply_in(
            &mut tx,
            self.projection.as_ref(),
            &schema,
            event,
            Mode::Live,
        )
        .await?;
        if outcome == Outcome::Queued {
            apply::park(
                &mut tx,
                &schema,
                &apply::position(event),
                raw,
                "waiting behind a parked event",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn park(
        &self,
        pos: &StreamPosition,
        raw: Option<&[u8]>,
        error: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let schema = generation::live_schema(&mut tx, self.projection.name())
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        apply::park(&mut tx, &schema, pos, raw, error).await?;
        tx.commit().await
    }

    async fn dead_letter(
        &self,
        producer: &FutureProducer,
        dlq: &str,
        msg: &BorrowedMessage<'_>,
        error: &str,
    ) {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = msg.headers() {
            for h in original.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        headers = headers
            .insert(Header {
                key: "dlq_error",
                value: Some(error),
            })
            .insert(Header {
                key: "dlq_projector",
                value: Some(self.projection.name()),
            })
            .insert(Header {
                key: "dlq_source",
                value: Some(&source),
            });
        let mut record = FutureRecord::to(dlq).headers(headers);
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        if let Some(value) = msg.payload() {
            record = record.payload(value);
        }
        match producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => self.status.send_modify(|s| s.dead_lettered += 1),
            Err((e, _)) => {
                tracing::error!(error = %e, %source, "dead-lettering failed; the event stays parked")
            }
        }
    }
}

fn event_span(projector: &'static str, msg: &BorrowedMessage<'_>) -> tracing::Span {
    let header = |name: &str| envelope::header(msg, name).unwrap_or("");
    let span = tracing::info_span!(
        "event",
        projector,
        topic = msg.topic(),
        partition = msg.partition(),
        offset = msg.offset(),
        event_id = %header("event_id"),
        event_type = %header("event_type"),
        correlation_id = %header("correlation_id"),
        traceparent = %header("traceparent"),
    );
    // With traces exported, applying the event joins the trace of the request that caused it.
    if let Some(traceparent) = envelope::header(msg, "traceparent") {
        platform::telemetry::continue_trace(
            &span,
            traceparent,
            envelope::header(msg, "tracestate"),
        );
    }
    span
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lag from broker watermarks and the group's committed offsets, every `every`.
async fn measure_lag(
    consumer: std::sync::Weak<StreamConsumer>,
    status: watch::Sender<ProjectorStatus>,
    every: Duration,
    name: &'static str,
) {
    loop {
        tokio::time::sleep(every).await;
        let Some(c) = consumer.upgrade() else { return };
        let measured = tokio::task::spawn_blocking(
            move || -> Result<(i64, usize), rdkafka::error::KafkaError> {
                let assignment = c.assignment()?;
                let assigned = assignment.count();
                let committed =
                    c.committed_offsets(assignment, Timeout::After(Duration::from_secs(5)))?;
                let mut behind = 0;
                for tp in committed.elements() {
                    let (low, high) = c.fetch_watermarks(
                        tp.topic(),
                        tp.partition(),
                        Timeout::After(Duration::from_secs(5)),
                    )?;
                    let at = tp.offset().to_raw().filter(|o| *o >= 0).unwrap_or(low);
                    behind += (high - at).max(0);
                }
                Ok((behind, assigned))
            },
        )
        .await;
        let Ok(Ok((behind, assigned))) = measured else {
            continue;
        };
        status.send_modify(|s| {
            s.assigned_partitions = assigned;
            s.lag_events = behind;
            s.lag_seconds = match (behind, s.last_recorded_at) {
                (0, _) | (_, None) => 0.0,
                (_, Some(t)) => (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0,
            };
        });
        let s = status.borrow().clone();
        metrics::gauge!("projector_lag_events", "projector" => name).set(s.lag_events as f64);
        metrics::gauge!("projector_lag_seconds", "projector" => name).set(s.lag_seconds);
    }
}

/// Result of a re-drive.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RedriveReport {
    pub applied: u64,
    pub still_parked: u64,
}

/// Applies parked events in sequence order per aggregate, reading each from the event
/// store, stopping an aggregate at its first failure. Safe to run while the projector
/// consumes.
pub async fn redrive(
    pool: &PgPool,
    projection: &dyn Projection,
) -> Result<RedriveReport, RuntimeError> {
    let name = projection.name();
    let mut report = RedriveReport::default();
    let mut failed: HashMap<(String, String), String> = HashMap::new();
    loop {
        let mut conn = pool.acquire().await?;
        let schema = generation::live_schema(&mut conn, name)
            .await?
            .ok_or(RuntimeError::NoGeneration(name))?;
        let pending: Vec<_> = apply::parked(&mut conn, &schema)
            .await?
            .into_iter()
            .filter(|(p, _)| {
                !failed.contains_key(&(p.aggregate_type.clone(), p.aggregate_id.clone()))
            })
            .collect();
        drop(conn);
        if pending.is_empty() {
            break;
        }
        for (pos, raw) in pending {
            let key = (pos.aggregate_type.clone(), pos.aggregate_id.clone());
            if failed.contains_key(&key) {
                continue;
            }
            let mut tx = pool.begin().await?;
            let result = match stored_envelope(&mut tx, &pos).await {
                Ok(env) => apply::apply_in(&mut tx, projection, &schema, &env, Mode::Redrive).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(_) => {
                    apply::unpark(&mut tx, &schema, &pos).await?;
                    tx.commit().await?;
                    report.applied += 1;
                }
                Err(e) => {
                    tx.rollback().await?;
                    let mut tx = pool.begin().await?;
                    apply::park(&mut tx, &schema, &pos, raw.as_deref(), &e.to_string()).await?;
                    tx.commit().await?;
                    failed.insert(key, e.to_string());
                }
            }
        }
    }
    let mut conn = pool.acquire().await?;
    let schema = generation::live_schema(&mut conn, name)
        .await?
        .ok_or(RuntimeError::NoGeneration(name))?;
    report.still_parked = apply::parked(&mut conn, &schema).await?.len() as u64;
    Ok(report)
}

/// A parked event as the event store has it: the source of truth, whatever the Kafka
/// record looked like.
async fn stored_envelope(
    tx: &mut PgConnection,
    pos: &StreamPosition,
) -> Result<Envelope, ApplyError> {
    let stored = command_api::store::log::aggregate_events(
        &mut *tx,
        &pos.aggregate_type,
        &pos.aggregate_id,
        pos.sequence..=pos.sequence,
    )
    .await?;
    let row = stored
        .into_iter()
        .next()
        .ok_or_else(|| ApplyError::Rejected("parked event is not in the event store".into()))?;
    Envelope::from_store(row).map_err(|e| ApplyError::Rejected(e.to_string()))
}
