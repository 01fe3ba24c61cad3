//! The projector runtime: runs a projection ([`projection::Sink`], tables or side
//! effects) as a Kafka consumer group. Every projector binary is a [`service::main`] call.
//!
//! Records are decoded as they arrive and queued per aggregate ([`schedule`]); calls of
//! the sink take the waiting records of aggregates not in a call already, tenant by
//! tenant in turn, so one aggregate's events take effect in order while different
//! aggregates' run side by side: a table sink one batch at a time (up to
//! `PROJECTOR_BATCH_MAX`), a side-effect sink up to `PROJECTOR_CONCURRENCY` calls at
//! once. The sink's rules (progress per aggregate, duplicate skip, gap fill, parking
//! behind a parked event) are in the `projection` crate. A call the sink refuses is
//! applied again event by event, so one bad event fails alone: it is retried with
//! backoff, then parked and copied to the dead-letter topic while other aggregates keep
//! flowing. A database or sink that is unavailable delays events without counting
//! attempts, so an outage parks nothing. Offsets are committed up to the oldest record
//! not finished; fetching pauses while `PROJECTOR_BUFFER` records are unfinished. On
//! shutdown, calls in flight get `close_timeout` to finish, the rest are abandoned (their
//! records come again to whoever consumes next, and the sink's effect ids make that
//! harmless), and exactly the finished offsets of the partitions still assigned are
//! committed, within a bound.

mod dead_letter;
mod lag;
mod schedule;
pub mod service;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use event_store::Reader;
use kafka::{KafkaConfig, KafkaSetupError};
use platform::backoff::Backoff;
use projection::bookkeeping;
use projection::{
    ApplyError, Envelope, EventRef, Outcome, Parallelism, Pass, Sink, Target, generation,
};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use dead_letter::dead_letter_topic;
pub use schedule::Load;

use schedule::{Item, Limits, Partition, Scheduler};

/// How often finished offsets are committed and the load is published.
const TICK: Duration = Duration::from_millis(50);

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
    /// A call of the sink panicked: its records are not done, so the runtime stops
    /// rather than commit past them.
    #[error("a call of the sink panicked: {0}")]
    CallPanicked(String),
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
    /// Calls of the sink in flight at once (`PROJECTOR_CONCURRENCY`; `None`: the sink's
    /// own, 1 for a table sink, [`projection::DEFAULT_EFFECT_CONCURRENCY`] for a
    /// side-effect sink unless it says fewer).
    pub concurrency: Option<usize>,
    /// Calls in flight for one tenant at once (`PROJECTOR_TENANT_CONCURRENCY`; `None`:
    /// three quarters of `concurrency`), so a quarter stays free for other tenants while
    /// one tenant's burst waits on slow effects.
    pub tenant_concurrency: Option<usize>,
    /// Records received and not finished, at most, before fetching pauses
    /// (`PROJECTOR_BUFFER`, default 10,000): bounds memory, and how far behind the oldest
    /// unfinished record the commit point may stay.
    pub buffer: usize,
    /// How often lag is measured.
    pub lag_interval: Duration,
    /// Longest the calls in flight, then the final offset commit and leaving the group,
    /// may each take on shutdown.
    pub close_timeout: Duration,
}

/// Records received and not finished, at most, by default.
pub const DEFAULT_BUFFER: usize = 10_000;

/// How a projector consumes: the settings every projector binary reads.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Projector")]
pub struct ProjectorSettings {
    /// Where `/healthz`, `/readyz`, `/metrics` and `/status` are served (`dev/stack run`
    /// gives the projectors :8082 and up in the order of their names).
    #[arg(
        id = "projector-addr",
        long = "projector-addr",
        env = "PROJECTOR_ADDR",
        default_value = "127.0.0.1:8082"
    )]
    pub addr: std::net::SocketAddr,
    /// The consumer group (default `threadline.<projection>`).
    #[arg(long = "projector-group", env = "PROJECTOR_GROUP")]
    pub group: Option<String>,
    /// Attempts before an event is parked and dead-lettered.
    #[arg(
        long = "projector-max-attempts",
        env = "PROJECTOR_MAX_ATTEMPTS",
        default_value_t = 5
    )]
    pub max_attempts: u32,
    /// First retry delay in milliseconds, doubled per attempt (with random jitter).
    #[arg(long = "projector-retry-backoff-ms", env = "PROJECTOR_RETRY_BACKOFF_MS", default_value = "100", value_parser = platform::config::millis)]
    pub backoff: Duration,
    /// Most records handed to a projection in one call: one transaction for tables, one
    /// round of provider calls or deliveries for the others (default 1000 for table
    /// projections, read model and analytics; 100 for the others).
    #[arg(long = "projector-batch-max", env = "PROJECTOR_BATCH_MAX", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_max: Option<u32>,
    /// Calls of a projection in flight at once: each aggregate's events go to one call at
    /// a time, in order; different aggregates' run side by side (default 1 for table
    /// projections; 256 for the assistant, 64 for notifications, 1 for the semantic index
    /// with the local model, 16 with a remote one).
    #[arg(id = "projector-concurrency", long = "projector-concurrency", env = "PROJECTOR_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Calls in flight for one tenant (default three quarters of the concurrency): waiting
    /// work is taken tenant by tenant in turn, and the rest stays free for other tenants
    /// during one tenant's burst.
    #[arg(long = "projector-tenant-concurrency", env = "PROJECTOR_TENANT_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_concurrency: Option<u32>,
    /// Records received and not finished before fetching pauses: bounds memory, and how far
    /// offsets can trail the oldest unfinished record (`load` in `/status`).
    #[arg(long = "projector-buffer", env = "PROJECTOR_BUFFER", default_value_t = DEFAULT_BUFFER as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub buffer: u32,
}

impl Settings {
    /// The `settings` for the projection `name` whose sink batches at most `batch_max`
    /// events unless the settings say otherwise.
    pub fn new(settings: &ProjectorSettings, name: &str, batch_max: usize) -> Self {
        let size = |n: u32| n as usize;
        Settings {
            group: settings
                .group
                .clone()
                .unwrap_or_else(|| format!("threadline.{name}")),
            max_attempts: settings.max_attempts,
            backoff: settings.backoff,
            batch_max: settings.batch_max.map_or(batch_max.max(1), size),
            concurrency: settings.concurrency.map(size),
            tenant_concurrency: settings.tenant_concurrency.map(size),
            buffer: size(settings.buffer),
            lag_interval: Duration::from_secs(2),
            close_timeout: Duration::from_secs(3),
        }
    }

    fn limits(&self, sink: &impl Sink) -> Limits {
        let concurrency = self
            .concurrency
            .unwrap_or_else(|| sink.concurrency())
            .max(1);
        Limits {
            concurrency,
            tenant_concurrency: self
                .tenant_concurrency
                .unwrap_or(concurrency - concurrency / 4)
                .clamp(1, concurrency),
            batch_max: self.batch_max,
            parallelism: sink.parallelism(),
        }
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
    /// What the projector is waiting out now (the last outage's reason), until a call
    /// succeeds again; also the gauge `projector_waiting_on_outage` (1 while waiting), which
    /// an alert watches: an outage that does not heal (a vector index lost with its
    /// storage) shows here instead of only in the log.
    pub waiting_on: Option<String>,
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// Partitions assigned to this member of the group, as last measured.
    pub assigned_partitions: usize,
    /// What is in flight and what waits (see [`Load`]).
    pub load: Load,
    /// Calls of the sink allowed at once, and whether they carry one aggregate each.
    pub concurrency: usize,
    pub parallelism: Option<Parallelism>,
    /// Fetching is paused: `PROJECTOR_BUFFER` records are unfinished.
    pub paused: bool,
}

pub struct Runtime<S: Sink> {
    /// The database, and the event store as the sink reads it (gap fills, bootstraps):
    /// opens sealed fields.
    events: Reader,
    sink: Arc<S>,
    kafka: KafkaConfig,
    settings: Settings,
    /// The settings as they apply to this sink.
    limits: Limits,
    status: watch::Sender<ProjectorStatus>,
}

/// What a call needs, shared by the calls in flight.
struct Core<S: Sink> {
    events: Reader,
    sink: Arc<S>,
    settings: Settings,
    status: watch::Sender<ProjectorStatus>,
    producer: FutureProducer,
    dlq: String,
}

/// A record's place in its aggregate's stream and, if it decodes, the event.
enum Decoded {
    Event(Box<Envelope>),
    /// Known stream position, value or headers unusable: parked, dead-lettered.
    Undecodable(EventRef, String),
    /// Not even a stream position: dead-lettered only.
    Unplaceable(String),
}

/// What a queued record asks of its call.
enum Work {
    Apply(Box<Envelope>),
    Park(EventRef, String),
}

/// A queued record: what to do, and the record itself (for parking and dead letters).
struct Job {
    work: Work,
    msg: OwnedMessage,
}

/// How a call ended.
enum CallEnd {
    /// Every record of the call is applied, parked, or known to be a duplicate.
    Done,
    /// Shutdown came while the call waited out an outage: its records are not done.
    Interrupted,
}

fn decode<M: Message>(msg: &M) -> Decoded {
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
    /// A runtime reading the event store through `store` (a pool alone: without data
    /// protection).
    pub fn new(
        store: impl Into<Reader>,
        sink: Arc<S>,
        kafka: KafkaConfig,
        settings: Settings,
    ) -> (Self, watch::Receiver<ProjectorStatus>) {
        let events: Reader = store.into();
        let limits = settings.limits(sink.as_ref());
        let (status, rx) = watch::channel(ProjectorStatus {
            concurrency: limits.concurrency,
            parallelism: Some(limits.parallelism),
            ..ProjectorStatus::default()
        });
        (
            Runtime {
                events,
                sink,
                kafka,
                settings,
                limits,
                status,
            },
            rx,
        )
    }

    /// Consumes until `shutdown` is true, then commits what was finished and leaves the
    /// group. Returns early only with an error (the projector is then not working).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), RuntimeError> {
        let name = self.sink.name();
        // Counters exist from the start (at 0), so dashboards and alerts see them before
        // the first event parks.
        metrics::counter!("projector_parked_events_total", "projector" => name).increment(0);
        let (schema, created) =
            generation::ensure_live_created(self.events.pool(), self.sink.as_ref()).await?;
        if created {
            tracing::info!(
                projection = name,
                "new projection: filling it from the event store"
            );
            let replayed = projection::bootstrap(&self.events, self.sink.as_ref(), &schema).await?;
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
        let limits = self.limits;
        tracing::info!(
            projection = name,
            group = %self.settings.group,
            concurrency = limits.concurrency,
            tenant_concurrency = limits.tenant_concurrency,
            parallelism = ?limits.parallelism,
            "projector consuming"
        );
        // Stopped when this future ends or is dropped; it holds the consumer only while
        // measuring, so the consumer (and its group membership) does not outlive the
        // projector.
        let _lag = lag::spawn(
            Arc::downgrade(&consumer),
            self.status.clone(),
            self.settings.lag_interval,
            name,
        );
        let core = Arc::new(Core {
            events: self.events.clone(),
            sink: self.sink.clone(),
            settings: self.settings.clone(),
            status: self.status.clone(),
            producer,
            dlq,
        });
        let mut scheduler: Scheduler<Job> = Scheduler::new(limits);
        let mut calls: JoinSet<(u64, CallEnd)> = JoinSet::new();
        let mut paused = false;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended: Result<(), RuntimeError> = loop {
            let mut started = false;
            while let Some(unit) = scheduler.next_unit() {
                let core = core.clone();
                let stop = shutdown.clone();
                calls.spawn(async move {
                    let id = unit.id;
                    (id, core.call(unit.items, stop).await)
                });
                started = true;
            }
            if started {
                self.publish_load(&scheduler);
            }
            let full = scheduler.buffered() >= self.settings.buffer;
            if full != paused {
                pause(&consumer, full);
                paused = full;
                self.status.send_modify(|s| s.paused = full);
            }
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break Ok(()),
                Some(joined) = calls.join_next() => match joined {
                    Ok((id, CallEnd::Done)) => {
                        scheduler.finish(id);
                        self.publish_load(&scheduler);
                    }
                    // Left in flight: its records are neither finished nor committed.
                    Ok((_, CallEnd::Interrupted)) => {}
                    Err(e) => break Err(RuntimeError::CallPanicked(e.to_string())),
                },
                received = consumer.recv() => match received {
                    Ok(msg) => self.receive(&core, &mut scheduler, &msg).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "consume error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = tick.tick() => {
                    commit(&consumer, &mut scheduler);
                    self.publish_load(&scheduler);
                }
            }
        };
        // Calls in flight get a moment to finish; what is left is abandoned, and comes
        // again to whoever consumes these partitions next.
        let drain = tokio::time::sleep(self.settings.close_timeout);
        tokio::pin!(drain);
        while !calls.is_empty() {
            tokio::select! {
                Some(joined) = calls.join_next() => {
                    if let Ok((id, CallEnd::Done)) = joined {
                        scheduler.finish(id);
                    }
                }
                () = &mut drain => {
                    tracing::info!(calls = calls.len(), "abandoning calls still in flight at shutdown");
                    calls.shutdown().await;
                }
            }
        }
        self.publish_load(&scheduler);
        self.close(consumer, scheduler.commit_points()).await;
        // Dropping a producer flushes and destroys its client, which waits on a broker
        // that is gone: let that happen where nobody waits for it.
        match Arc::try_unwrap(core) {
            Ok(core) => {
                std::thread::spawn(move || drop(core.producer));
            }
            Err(core) => drop(core),
        }
        tracing::info!(projection = name, "projector stopped");
        ended
    }

    /// Decodes a record and queues it for its aggregate's next call; a record without a
    /// stream position is dead-lettered at once.
    async fn receive(
        &self,
        core: &Core<S>,
        scheduler: &mut Scheduler<Job>,
        msg: &rdkafka::message::BorrowedMessage<'_>,
    ) {
        let now = Instant::now();
        let partition: Partition = (Arc::from(msg.topic()), msg.partition());
        let (work, tenant) = match decode(msg) {
            Decoded::Event(e) => {
                let tenant = e.tenant_id.clone();
                (Work::Apply(e), tenant)
            }
            Decoded::Undecodable(at, error) => {
                let tenant = kafka::headers::header(msg, schemas::headers::TENANT_ID)
                    .unwrap_or_default()
                    .to_owned();
                (Work::Park(at, error), tenant)
            }
            Decoded::Unplaceable(error) => {
                tracing::error!(%error, offset = msg.offset(), "record without stream position");
                dead_letter::send(core, msg, &error).await;
                scheduler.finished_now(partition, msg.offset(), now);
                return;
            }
        };
        let key = match &work {
            Work::Apply(e) => (e.aggregate_type.as_str(), e.aggregate_id.as_str()),
            Work::Park(at, _) => (at.aggregate_type.as_str(), at.aggregate_id.as_str()),
        };
        let key = (Arc::from(key.0), Arc::from(key.1));
        scheduler.push(
            Item {
                partition,
                offset: msg.offset(),
                tenant: Arc::from(tenant),
                key,
                payload: Job {
                    work,
                    msg: msg.detach(),
                },
            },
            now,
        );
    }

    fn publish_load(&self, scheduler: &Scheduler<Job>) {
        let name = self.sink.name();
        let load = scheduler.load(Instant::now());
        metrics::gauge!("projector_calls_in_flight", "projector" => name)
            .set(load.calls_in_flight as f64);
        metrics::gauge!("projector_records_waiting", "projector" => name).set(load.waiting as f64);
        metrics::gauge!("projector_oldest_unfinished_seconds", "projector" => name)
            .set(load.oldest_unfinished_seconds);
        self.status.send_if_modified(|s| {
            if s.load == load {
                return false;
            }
            s.load = load;
            true
        });
    }

    /// Commits the finished offsets of the partitions still assigned (a partition revoked
    /// earlier belongs to another member now, whose progress must not be rewound) and
    /// leaves the group; gives up after `close_timeout` when the broker does not answer.
    async fn close(&self, consumer: Arc<StreamConsumer>, points: Vec<(Partition, i64)>) {
        let timeout = self.settings.close_timeout;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // A thread of its own: librdkafka's commit and close block, and against a broker
        // that is gone they block for as long as they are allowed to.
        std::thread::spawn(move || {
            let assigned = consumer.assignment().unwrap_or_default();
            let offsets = final_offsets(&points, &assigned);
            if offsets.count() > 0
                && let Err(e) = consumer.commit(&offsets, CommitMode::Sync)
            {
                tracing::warn!(error = %e, "final offset commit failed; finished events may be redelivered and skipped");
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
}

/// Resolves once a stop is asked for (holding nothing of the channel while it waits).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Pauses (or resumes) fetching for every assigned partition.
fn pause(consumer: &StreamConsumer, stop: bool) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    let result = if stop {
        consumer.pause(&assigned)
    } else {
        consumer.resume(&assigned)
    };
    match result {
        Ok(()) if stop => tracing::info!("buffer full: fetching paused"),
        Ok(()) => tracing::info!("fetching resumed"),
        Err(e) => tracing::warn!(error = %e, "pausing or resuming partitions failed"),
    }
}

/// Commits the commit points that moved, of the partitions assigned now.
fn commit(consumer: &StreamConsumer, scheduler: &mut Scheduler<Job>) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    let moved = scheduler.commits();
    if moved.is_empty() {
        return;
    }
    let offsets = final_offsets(&moved, &assigned);
    if offsets.count() > 0
        && let Err(e) = consumer.commit(&offsets, CommitMode::Async)
    {
        tracing::warn!(error = %e, "offset commit failed; the events may be redelivered and skipped");
    }
}

impl<S: Sink> Core<S> {
    /// One call: its records in order, each aggregate's events applied as one batch where
    /// the sink takes it, event by event where it does not.
    async fn call(&self, jobs: Vec<Item<Job>>, mut shutdown: watch::Receiver<bool>) -> CallEnd {
        let mut pending: Vec<(&OwnedMessage, &Envelope)> = Vec::with_capacity(jobs.len());
        for job in &jobs {
            match &job.payload.work {
                Work::Apply(e) => pending.push((&job.payload.msg, e)),
                Work::Park(at, error) => {
                    // What came before it first, so its aggregate's order holds.
                    if self.apply(&pending, &mut shutdown).await.is_none() {
                        return CallEnd::Interrupted;
                    }
                    pending.clear();
                    if self
                        .park(&job.payload.msg, at, error, &mut shutdown)
                        .await
                        .is_none()
                    {
                        return CallEnd::Interrupted;
                    }
                }
            }
        }
        match self.apply(&pending, &mut shutdown).await {
            Some(()) => CallEnd::Done,
            None => CallEnd::Interrupted,
        }
    }

    /// Applies decoded records as one batch; if the sink refuses the batch, one by one.
    async fn apply(
        &self,
        pending: &[(&OwnedMessage, &Envelope)],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<()> {
        if pending.is_empty() {
            return Some(());
        }
        let events: Vec<Envelope> = pending.iter().map(|(_, e)| (*e).clone()).collect();
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
                    let span = event_span(self.sink.name(), *msg);
                    tracing::Instrument::instrument(self.apply_one(msg, event, shutdown), span)
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
                .apply(&self.events, Target::Live, events, Pass::Live)
                .await
            {
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "database or sink unavailable; retrying");
                    metrics::gauge!("projector_waiting_on_outage", "projector" => self.sink.name())
                        .set(1.0);
                    self.status.send_modify(|s| {
                        s.outage_retries += 1;
                        s.waiting_on = Some(e.to_string());
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return None,
                    }
                }
                other => {
                    if self.status.borrow().waiting_on.is_some() {
                        metrics::gauge!("projector_waiting_on_outage", "projector" => self.sink.name())
                            .set(0.0);
                        self.status.send_modify(|s| s.waiting_on = None);
                    }
                    return Some(other);
                }
            }
        }
    }

    /// Applies one event with retries; parks it when it keeps failing.
    async fn apply_one(
        &self,
        msg: &OwnedMessage,
        event: &Envelope,
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
        self.park(msg, &event.event_ref(), &error, shutdown).await
    }

    /// Parks a record that keeps failing (the database must take it, so this retries
    /// until it does) and copies it to the dead-letter topic. A record parked before (a
    /// redelivery) keeps its first error and is neither counted nor copied again.
    async fn park(
        &self,
        msg: &OwnedMessage,
        at: &EventRef,
        error: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<()> {
        let name = self.sink.name();
        let mut backoff = Backoff::new(self.settings.backoff, MAX_DELAY);
        let newly = loop {
            match bookkeeping::park_in_live(self.events.pool(), name, at, msg.payload(), error)
                .await
            {
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
        dead_letter::send(self, msg, error).await;
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

/// The offsets to commit: `points` of the partitions assigned now. (Apache Kafka accepts
/// a member's commit for any partition; committing a partition that moved to another
/// member would rewind that member's progress.)
fn final_offsets(points: &[(Partition, i64)], assigned: &TopicPartitionList) -> TopicPartitionList {
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), next) in points {
        if assigned.find_partition(topic, *partition).is_some() {
            let _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
    }
    offsets
}

/// What [`Core::record`] reads of an event.
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

fn event_span<M: Message>(projector: &'static str, msg: &M) -> tracing::Span {
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
        let handled: Vec<(Partition, i64)> = vec![
            ((Arc::from("t"), 0), 10),
            ((Arc::from("t"), 1), 20),
            ((Arc::from("u"), 0), 30),
        ];
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
