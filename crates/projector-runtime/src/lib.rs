//! The projector runtime: runs a projection ([`projection::Sink`], tables or side
//! effects) as a Kafka consumer group. Every projector binary is a [`service::main`] call.
//!
//! Records are taken in micro-batches (what the broker has ready, up to
//! `PROJECTOR_BATCH_MAX`) and handed to the sink in one call; the sink's rules (progress
//! per aggregate, duplicate skip, gap fill, parking behind a parked event) are in the
//! `projection` crate. A batch the sink refuses is applied again event by event, so one
//! bad event fails alone: it is retried with backoff, then parked and copied to the
//! dead-letter topic while other aggregates keep flowing. A database or sink that is
//! unavailable delays events without counting attempts, so an outage parks nothing.
//! Offsets are committed after the sink has recorded the batch, and on shutdown exactly
//! the handled offsets of the partitions still assigned are committed, within a bound.

mod dead_letter;
mod lag;
pub mod service;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use kafka::{KafkaConfig, KafkaSetupError};
use platform::backoff::Backoff;
use projection::bookkeeping;
use projection::{ApplyError, Envelope, EventRef, Outcome, Pass, Sink, Target, generation};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use thiserror::Error;
use tokio::sync::watch;

pub use dead_letter::dead_letter_topic;

/// Longest wait between two retries.
const MAX_DELAY: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("filling the new projection from the event store: {0}")]
    Bootstrap(#[from] projection::ProjectionError),
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error("kafka: {0}")]
    Consume(#[from] rdkafka::error::KafkaError),
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Consumer group (`PROJECTOR_GROUP`, default `threadline.<name>`).
    pub group: String,
    /// Attempts before an event is parked (`PROJECTOR_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt with random jitter (`PROJECTOR_RETRY_BACKOFF_MS`,
    /// default 100).
    pub backoff: Duration,
    /// Most records handed to the sink in one call (`PROJECTOR_BATCH_MAX`, default the
    /// sink's own: 1,000 for a table sink, 100 for a side-effect sink).
    pub batch_max: usize,
    /// How often lag is measured.
    pub lag_interval: Duration,
    /// Longest the final offset commit and leaving the group may take on shutdown.
    pub close_timeout: Duration,
}

impl Settings {
    /// From the environment, for the projection `name` whose sink batches at most
    /// `batch_max` events unless `PROJECTOR_BATCH_MAX` says otherwise.
    pub fn for_projection(
        name: &str,
        batch_max: usize,
    ) -> Result<Self, platform::config::ConfigError> {
        use platform::config;
        Ok(Settings {
            group: config::var("PROJECTOR_GROUP").unwrap_or_else(|| format!("threadline.{name}")),
            max_attempts: config::parse_or("PROJECTOR_MAX_ATTEMPTS", 5)?,
            backoff: Duration::from_millis(config::parse_or("PROJECTOR_RETRY_BACKOFF_MS", 100)?),
            batch_max: config::parse_or("PROJECTOR_BATCH_MAX", batch_max)?.max(1),
            lag_interval: Duration::from_secs(2),
            close_timeout: Duration::from_secs(3),
        })
    }
}

/// Progress and lag, as last measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ProjectorStatus {
    pub applied: u64,
    pub duplicates: u64,
    /// Events newly parked: failed ones and those queued behind them.
    pub parked: u64,
    /// Redelivered events that were parked already (left as they were, not counted again).
    pub already_parked: u64,
    pub dead_lettered: u64,
    /// Waits for an unavailable database or sink (attempts not counted).
    pub outage_retries: u64,
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// Partitions assigned to this member of the group, as last measured.
    pub assigned_partitions: usize,
}

pub struct Runtime<S: Sink> {
    pool: PgPool,
    sink: Arc<S>,
    kafka: KafkaConfig,
    settings: Settings,
    status: watch::Sender<ProjectorStatus>,
}

/// A record's place in its aggregate's stream and, if it decodes, the event.
enum Decoded {
    Event(Box<Envelope>),
    /// Known stream position, value or headers unusable: parked, dead-lettered.
    Undecodable(EventRef, String),
    /// Not even a stream position: dead-lettered only.
    Unplaceable(String),
}

fn decode(msg: &BorrowedMessage<'_>) -> Decoded {
    use schemas::headers as h;
    let header = |name| kafka::headers::header(msg, name);
    let Some(aggregate_id) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else {
        return Decoded::Unplaceable("record key is missing or not UTF-8".into());
    };
    let (Some(aggregate_type), Some(sequence)) = (
        header(h::AGGREGATE_TYPE),
        header(h::SEQUENCE).and_then(|s| s.parse::<i64>().ok()),
    ) else {
        return Decoded::Unplaceable("headers aggregate_type and sequence are required".into());
    };
    let at = EventRef {
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: aggregate_id.to_owned(),
        sequence,
        event_id: header(h::EVENT_ID).and_then(|s| s.parse().ok()),
    };
    let headers = match kafka::headers::read(msg) {
        Ok(headers) => headers,
        Err(e) => return Decoded::Undecodable(at, e.to_string()),
    };
    let Some(value) = msg.payload() else {
        return Decoded::Undecodable(at, "empty value".into());
    };
    match Envelope::from_record(headers, aggregate_id.to_owned(), value) {
        Ok(e) => Decoded::Event(Box::new(e)),
        Err(e) => Decoded::Undecodable(at, e.to_string()),
    }
}

impl<S: Sink> Runtime<S> {
    pub fn new(
        pool: PgPool,
        sink: Arc<S>,
        kafka: KafkaConfig,
        settings: Settings,
    ) -> (Self, watch::Receiver<ProjectorStatus>) {
        let (status, rx) = watch::channel(ProjectorStatus::default());
        (
            Runtime {
                pool,
                sink,
                kafka,
                settings,
                status,
            },
            rx,
        )
    }

    /// Consumes until `shutdown` is true, then commits what was handled and leaves the
    /// group. Returns early only with an error (the projector is then not working).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), RuntimeError> {
        let name = self.sink.name();
        // Counters exist from the start (at 0), so dashboards and alerts see them before
        // the first event parks.
        metrics::counter!("projector_parked_events_total", "projector" => name).increment(0);
        let (schema, created) =
            generation::ensure_live_created(&self.pool, self.sink.as_ref()).await?;
        if created {
            tracing::info!(
                projection = name,
                "new projection: filling it from the event store"
            );
            let replayed = projection::bootstrap(&self.pool, self.sink.as_ref(), &schema).await?;
            tracing::info!(
                projection = name,
                replayed,
                "filled from the event store; now consuming"
            );
        }
        let mut topics = self.kafka.event_topics();
        let dlq = dead_letter_topic(&self.kafka, name);
        topics.push(dlq.clone());
        self.kafka.ensure_topics(&topics).await?;
        topics.pop();
        let producer = self.kafka.producer(&format!("{name}-dlq"))?;
        let consumer = Arc::new(self.kafka.consumer(name, &self.settings.group)?);
        let subscribed: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&subscribed)?;
        tracing::info!(projection = name, group = %self.settings.group, "projector consuming");
        // Stopped when this future ends or is dropped; it holds the consumer only while
        // measuring, so the consumer (and its group membership) does not outlive the
        // projector.
        let _lag = lag::spawn(
            Arc::downgrade(&consumer),
            self.status.clone(),
            self.settings.lag_interval,
            name,
        );

        // Offsets of the records handled so far, committed on the way out. (Not the
        // consumer's position: a record fetched but not handled must come back.)
        let mut handled: HashMap<(String, i32), i64> = HashMap::new();
        loop {
            let first = tokio::select! {
                msg = consumer.recv() => msg,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let first = match first {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < self.settings.batch_max {
                match consumer.recv().now_or_never() {
                    Some(Ok(m)) => batch.push(m),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consume error");
                        break;
                    }
                    None => break,
                }
            }
            // Ends only when shut down while the database or sink is unavailable.
            let Some(()) = self.handle(&batch, &producer, &dlq, &mut shutdown).await else {
                break;
            };
            let mut offsets = TopicPartitionList::new();
            for msg in &batch {
                let next = msg.offset() + 1;
                let entry = handled
                    .entry((msg.topic().to_owned(), msg.partition()))
                    .or_insert(next);
                *entry = (*entry).max(next);
            }
            for msg in &batch {
                let next = handled[&(msg.topic().to_owned(), msg.partition())];
                if offsets
                    .find_partition(msg.topic(), msg.partition())
                    .is_none()
                {
                    let _ = offsets.add_partition_offset(
                        msg.topic(),
                        msg.partition(),
                        Offset::Offset(next),
                    );
                }
            }
            if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
                tracing::warn!(error = %e, "offset commit failed; the events may be redelivered and skipped");
            }
        }
        self.close(consumer, handled).await;
        // Dropping a producer flushes and destroys its client, which waits on a broker
        // that is gone: let that happen where nobody waits for it.
        std::thread::spawn(move || drop(producer));
        tracing::info!(projection = name, "projector stopped");
        Ok(())
    }

    /// Commits the handled offsets of the partitions still assigned (a partition revoked
    /// earlier belongs to another member now, whose progress must not be rewound) and
    /// leaves the group; gives up after `close_timeout` when the broker does not answer.
    async fn close(&self, consumer: Arc<StreamConsumer>, handled: HashMap<(String, i32), i64>) {
        let timeout = self.settings.close_timeout;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // A thread of its own: librdkafka's commit and close block, and against a broker
        // that is gone they block for as long as they are allowed to.
        std::thread::spawn(move || {
            let assigned = consumer.assignment().unwrap_or_default();
            let offsets = final_offsets(&handled, &assigned);
            if offsets.count() > 0
                && let Err(e) = consumer.commit(&offsets, CommitMode::Sync)
            {
                tracing::warn!(error = %e, "final offset commit failed; handled events may be redelivered and skipped");
            }
            consumer.unsubscribe();
            drop(consumer);
            let _ = done_tx.send(());
        });
        if tokio::time::timeout(timeout, done_rx).await.is_err() {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "the broker did not answer the final commit in time; leaving without it"
            );
        }
    }

    /// Hands a batch to the sink. `None` if shut down while waiting out an outage.
    async fn handle(
        &self,
        batch: &[BorrowedMessage<'_>],
        producer: &FutureProducer,
        dlq: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<()> {
        let mut pending: Vec<(&BorrowedMessage<'_>, Envelope)> = Vec::with_capacity(batch.len());
        for msg in batch {
            match decode(msg) {
                Decoded::Event(e) => pending.push((msg, *e)),
                Decoded::Unplaceable(error) => {
                    tracing::error!(%error, offset = msg.offset(), "record without stream position");
                    dead_letter::send(self, producer, dlq, msg, &error).await;
                }
                Decoded::Undecodable(at, error) => {
                    // What came before it first, so its aggregate's order holds.
                    self.apply(&pending, producer, dlq, shutdown).await?;
                    pending.clear();
                    self.park(msg, &at, &error, producer, dlq, shutdown).await?;
                }
            }
        }
        self.apply(&pending, producer, dlq, shutdown).await
    }

    /// Applies decoded records as one batch; if the sink refuses the batch, one by one.
    async fn apply(
        &self,
        pending: &[(&BorrowedMessage<'_>, Envelope)],
        producer: &FutureProducer,
        dlq: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<()> {
        if pending.is_empty() {
            return Some(());
        }
        let events: Vec<Envelope> = pending.iter().map(|(_, e)| e.clone()).collect();
        let span = tracing::info_span!(
            "batch",
            projector = self.sink.name(),
            events = events.len(),
            first_event_id = %events[0].event_id,
            correlation_id = events[0].correlation_id.as_deref().unwrap_or(""),
        );
        let outcome =
            tracing::Instrument::instrument(self.apply_waiting(&events, shutdown), span).await?;
        match outcome {
            Ok(outcomes) => {
                for (e, outcome) in events.iter().zip(outcomes) {
                    self.record(outcome, e);
                }
                Some(())
            }
            Err(_) => {
                for (msg, event) in pending {
                    let span = event_span(self.sink.name(), msg);
                    tracing::Instrument::instrument(
                        self.apply_one(msg, event, producer, dlq, shutdown),
                        span,
                    )
                    .await?;
                }
                Some(())
            }
        }
    }

    /// Applies `events`, waiting out an unavailable database or sink. `None` if shut down
    /// meanwhile; otherwise the sink's answer, success or refusal.
    async fn apply_waiting(
        &self,
        events: &[Envelope],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Result<Vec<Outcome>, ApplyError>> {
        let mut backoff = Backoff::new(self.settings.backoff, MAX_DELAY);
        loop {
            match self
                .sink
                .apply(&self.pool, Target::Live, events, Pass::Live)
                .await
            {
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "database or sink unavailable; retrying");
                    self.status.send_modify(|s| s.outage_retries += 1);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return None,
                    }
                }
                other => return Some(other),
            }
        }
    }

    /// Applies one event with retries; parks it when it keeps failing.
    async fn apply_one(
        &self,
        msg: &BorrowedMessage<'_>,
        event: &Envelope,
        producer: &FutureProducer,
        dlq: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<()> {
        let mut error = String::new();
        let mut backoff = Backoff::new(self.settings.backoff, MAX_DELAY);
        for attempt in 1..=self.settings.max_attempts {
            match self
                .apply_waiting(std::slice::from_ref(event), shutdown)
                .await?
            {
                Ok(outcomes) => {
                    for outcome in outcomes {
                        self.record(outcome, event);
                    }
                    return Some(());
                }
                Err(e) => {
                    error = e.to_string();
                    tracing::warn!(attempt, error = %e, aggregate = %event.aggregate_id, sequence = event.sequence, "apply failed");
                    if attempt < self.settings.max_attempts {
                        tokio::select! {
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                            _ = shutdown.wait_for(|stop| *stop) => return None,
                        }
                    }
                }
            }
        }
        self.park(msg, &event.event_ref(), &error, producer, dlq, shutdown)
            .await
    }

    /// Parks a record that keeps failing (the database must take it, so this retries
    /// until it does) and copies it to the dead-letter topic. A record parked before (a
    /// redelivery) keeps its first error and is neither counted nor copied again.
    async fn park(
        &self,
        msg: &BorrowedMessage<'_>,
        at: &EventRef,
        error: &str,
        producer: &FutureProducer,
        dlq: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<()> {
        let name = self.sink.name();
        let mut backoff = Backoff::new(self.settings.backoff, MAX_DELAY);
        let newly = loop {
            match bookkeeping::park_in_live(&self.pool, name, at, msg.payload(), error).await {
                Ok(newly) => break newly,
                Err(e) => {
                    tracing::error!(error = %e, "cannot park event; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return None,
                    }
                }
            }
        };
        if !newly {
            tracing::info!(aggregate = %at.aggregate_id, sequence = at.sequence, "redelivered event is parked already");
            self.record(Outcome::AlreadyParked, at);
            return Some(());
        }
        dead_letter::send(self, producer, dlq, msg, error).await;
        self.status.send_modify(|s| s.parked += 1);
        metrics::counter!("projector_parked_events_total", "projector" => name).increment(1);
        tracing::error!(aggregate = %at.aggregate_id, sequence = at.sequence, %error, "event parked and dead-lettered");
        Some(())
    }

    fn record(&self, outcome: Outcome, event: &impl Recorded) {
        let name = self.sink.name();
        self.status.send_modify(|s| match outcome {
            Outcome::Applied => {
                s.applied += 1;
                if let Some(at) = event.recorded_at() {
                    s.last_recorded_at = Some(at);
                }
            }
            Outcome::Duplicate => s.duplicates += 1,
            Outcome::Queued => s.parked += 1,
            Outcome::AlreadyParked => s.already_parked += 1,
        });
        metrics::counter!("projector_events_total", "projector" => name, "outcome" => outcome.as_str())
            .increment(1);
    }
}

/// The offsets to commit on the way out: those handled, of the partitions still assigned.
/// (Apache Kafka accepts a member's commit for any partition; committing a partition that
/// moved to another member would rewind that member's progress.)
fn final_offsets(
    handled: &HashMap<(String, i32), i64>,
    assigned: &TopicPartitionList,
) -> TopicPartitionList {
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), next) in handled {
        if assigned.find_partition(topic, *partition).is_some() {
            let _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
    }
    offsets
}

/// What [`Runtime::record`] reads of an event.
trait Recorded {
    fn recorded_at(&self) -> Option<DateTime<Utc>>;
}

impl Recorded for Envelope {
    fn recorded_at(&self) -> Option<DateTime<Utc>> {
        Some(self.recorded_at)
    }
}

impl Recorded for EventRef {
    fn recorded_at(&self) -> Option<DateTime<Utc>> {
        None
    }
}

fn event_span(projector: &'static str, msg: &BorrowedMessage<'_>) -> tracing::Span {
    use schemas::headers as h;
    let header = |name: &str| kafka::headers::header(msg, name).unwrap_or("");
    let span = tracing::info_span!(
        "event",
        projector,
        topic = msg.topic(),
        partition = msg.partition(),
        offset = msg.offset(),
        event_id = %header(h::EVENT_ID),
        event_type = %header(h::EVENT_TYPE),
        correlation_id = %header(h::CORRELATION_ID),
        traceparent = %header(h::TRACEPARENT),
    );
    // With traces exported, applying the event joins the trace of the request that caused it.
    if let Some(traceparent) = kafka::headers::header(msg, h::TRACEPARENT) {
        platform::telemetry::continue_trace(
            &span,
            traceparent,
            kafka::headers::header(msg, h::TRACESTATE),
        );
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_commit_leaves_out_partitions_revoked_earlier() {
        let handled = HashMap::from([
            (("t".to_owned(), 0), 10),
            (("t".to_owned(), 1), 20),
            (("u".to_owned(), 0), 30),
        ]);
        let mut assigned = TopicPartitionList::new();
        assigned.add_partition("t", 1);
        assigned.add_partition("u", 0);
        assigned.add_partition("u", 1);
        let mut committed: Vec<(String, i32, Offset)> = final_offsets(&handled, &assigned)
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
            .collect();
        committed.sort_by_key(|(t, p, _)| (t.clone(), *p));
        assert_eq!(
            committed,
            vec![
                ("t".to_owned(), 1, Offset::Offset(20)),
                ("u".to_owned(), 0, Offset::Offset(30))
            ]
        );
    }
}
