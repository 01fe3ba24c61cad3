//! The outbox relay: publishes every committed event to Kafka, in commit order.
//!
//! * One active relay across replicas: the one holding a PostgreSQL advisory lock on a
//!   dedicated connection. The others wait; if the holder dies its session ends and the
//!   lock passes on.
//! * Reads the events table in committed order (`event_store::log`), publishes each event
//!   to the topic of its aggregate type, keyed by aggregate id, Avro in Confluent framing,
//!   with the contract's headers; idempotent producer, `acks=all`; records are handed to
//!   the producer one after another, so a full queue never lets a later record of a key
//!   overtake an earlier one ([`publish`]).
//! * Saves its cursor only after the broker acknowledged every record of a batch, on the
//!   lock's own connection (a relay that lost the lock cannot move it). A crash
//!   re-publishes at most one batch: duplicates carry the same `event_id` header.
//! * An event that cannot be published (it does not encode, or it is larger than
//!   `KAFKA_MESSAGE_MAX_BYTES`) is parked in `relay_parked`, and so are the later events of
//!   its aggregate, while other aggregates flow. `POST /v1/admin/relay/redrive` asks the
//!   active relay to publish them again, in order.
//! * A relay that cannot publish says so: publish failures are counted, its status turns
//!   `stuck` with the error, and lag keeps being measured while it retries.
//! * Refuses a cursor saved in another PostgreSQL cluster (its transaction ids would skip
//!   events); see `event_store::outbox::check_cluster`.

mod publish;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use event_store::outbox::{self, CursorError, RelayParked};
use event_store::protect;
use event_store::{StoredEvent, log};
use kafka::{KafkaConfig, KafkaSetupError};
use platform::backoff::Backoff;
use schemas::CommitPosition;
use sqlx::{ConnectOptions, PgConnection};
use thiserror::Error;
use tokio::sync::{Notify, watch};

pub use publish::Outcome;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Cursor name; one per relay deployment (`RELAY_NAME`, default `kafka`).
    pub name: String,
    /// The database; the relay holds one connection of its own (its leadership lock).
    pub database: platform::db::DbConfig,
    pub kafka: KafkaConfig,
    /// Events per read and publish round (`RELAY_BATCH_SIZE`, default 500).
    pub batch_size: i64,
    /// Sleep when there is nothing to publish (`RELAY_IDLE_POLL_MS`, default 20).
    pub idle_poll: Duration,
}

/// The relay's settings (command-api reads them).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Relay")]
pub struct RelaySettings {
    /// Run the relay in this process (one is active across replicas).
    #[arg(long = "relay-enabled", env = "RELAY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// The relay's cursor name; one per relay deployment.
    #[arg(long = "relay-name", env = "RELAY_NAME", default_value = "kafka")]
    pub name: String,
    /// Events per read and publish round.
    #[arg(
        long = "relay-batch-size",
        env = "RELAY_BATCH_SIZE",
        default_value_t = 500
    )]
    pub batch_size: i64,
    /// Milliseconds between polls when nothing is new (a commit of the same process wakes
    /// it at once).
    #[arg(long = "relay-idle-poll-ms", env = "RELAY_IDLE_POLL_MS", default_value = "20", value_parser = platform::config::millis)]
    pub idle_poll: Duration,
}

#[derive(Debug, Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("connecting to PostgreSQL timed out")]
    ConnectTimeout,
    #[error(transparent)]
    Cursor(#[from] CursorError),
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error("publishing event {event_id} failed: {reason}")]
    Publish {
        event_id: uuid::Uuid,
        reason: String,
    },
}

/// Progress, lag and health, as last measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RelayStatus {
    /// This relay holds the leadership lock and publishes.
    pub active: bool,
    /// Another relay holds the lock; this one waits to take over.
    pub standby: bool,
    /// Publishing has been failing since `failing_since`; `last_error` says why.
    pub stuck: bool,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Failed publish rounds since this relay started.
    pub publish_failures: u64,
    pub cursor: CommitPosition,
    pub published: u64,
    /// Events parked because they cannot be published (and those waiting behind them).
    pub parked: i64,
    /// Estimated events behind (global positions handed out after the cursor).
    pub lag_events: i64,
    /// Age of the oldest event not yet published.
    pub lag_seconds: f64,
}

pub struct Relay {
    config: RelayConfig,
    status: watch::Sender<RelayStatus>,
    /// Cuts an idle wait short (`Relay::woken_by`): the command service of the same
    /// process signals its commits on it. Commits of other processes are found by the
    /// idle poll.
    wake: Arc<Notify>,
}

/// Every how often lag is measured while publishing.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// Longest a connection to PostgreSQL may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Relay {
    pub fn new(config: RelayConfig) -> (Self, watch::Receiver<RelayStatus>) {
        let (status, rx) = watch::channel(RelayStatus::default());
        let wake = Arc::new(Notify::new());
        (
            Self {
                config,
                status,
                wake,
            },
            rx,
        )
    }

    /// Wakes an idle relay when `signal` is notified (the command service's
    /// `with_commit_signal`), so it publishes a commit at once rather than at its next
    /// poll; a notification while it is busy is kept for its next idle wait.
    pub fn woken_by(mut self, signal: Arc<Notify>) -> Self {
        self.wake = signal;
        self
    }

    async fn connect(&self) -> Result<PgConnection, RelayError> {
        let options = self.config.database.connect_options()?;
        tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| RelayError::ConnectTimeout)?
            .map_err(RelayError::from)
    }

    /// Runs until `shutdown` flips to true. Failures are logged, counted and retried with
    /// backoff from the saved cursor; meanwhile lag keeps being measured.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        // Exported from the start (at 0), for dashboards and alerts.
        metrics::counter!("relay_publish_failures_total").increment(0);
        metrics::counter!("relay_parked_events_total").increment(0);
        metrics::gauge!("relay_stuck").set(0.0);
        loop {
            let result = tokio::select! {
                result = self.lead() => result,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match result {
                Ok(()) => return,
                Err(e) => self.failed(&e).await,
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Records a failed round: counted, `stuck`, and lag measured from the saved cursor.
    async fn failed(&self, e: &RelayError) {
        tracing::error!(error = %e, "relay failed; retrying from the saved cursor");
        metrics::counter!("relay_publish_failures_total").increment(1);
        metrics::gauge!("relay_stuck").set(1.0);
        self.status.send_modify(|s| {
            s.active = false;
            s.stuck = true;
            s.failing_since.get_or_insert_with(Utc::now);
            s.last_error = Some(e.to_string());
            s.publish_failures += 1;
        });
        let measured = async {
            let mut conn = self.connect().await?;
            let cursor = outbox::peek_cursor(&mut conn, &self.config.name)
                .await?
                .unwrap_or_default();
            let lag = log::backlog(&mut conn, cursor).await?;
            Ok::<_, RelayError>((cursor, lag))
        };
        match measured.await {
            Ok((cursor, lag)) => self.report_lag(cursor, lag),
            Err(e) => tracing::warn!(error = %e, "cannot measure the relay's lag"),
        }
    }

    fn report_lag(&self, cursor: CommitPosition, (lag_events, lag_seconds): (i64, f64)) {
        metrics::gauge!("relay_lag_events").set(lag_events as f64);
        metrics::gauge!("relay_lag_seconds").set(lag_seconds);
        self.status.send_modify(|s| {
            s.cursor = cursor;
            s.lag_events = lag_events;
            s.lag_seconds = lag_seconds;
        });
    }

    /// Waits for the lock, then publishes until an error.
    async fn lead(&self) -> Result<(), RelayError> {
        let name = self.config.name.as_str();
        let mut conn = self.connect().await?;
        let mut waiting_logged = false;
        while !outbox::try_lead(&mut conn).await? {
            if !waiting_logged {
                tracing::info!("another relay is active; standing by");
                self.status.send_modify(|s| s.standby = true);
                waiting_logged = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        outbox::check_cluster(&mut conn, name).await?;
        tracing::info!(name, "relay is active");
        let kafka = &self.config.kafka;
        kafka.ensure_topics(&kafka.event_topics()).await?;
        let producer = kafka.producer(&format!("relay-{name}"))?;

        let (mut cursor, mut published) = outbox::load_cursor(&mut conn, name).await?;
        let parked = outbox::parked_count(&mut conn, name).await?;
        self.status.send_modify(|s| {
            s.active = true;
            s.standby = false;
            s.cursor = cursor;
            s.published = published;
            s.parked = parked;
        });

        let mut last_lag = Instant::now() - LAG_EVERY;
        loop {
            if outbox::take_redrive_request(&mut conn, name).await? {
                published += self.redrive(&mut conn, &producer).await?;
            }
            let batch = log::read_after(&mut conn, cursor, self.config.batch_size).await?;
            let batch = Self::publishable(batch);
            if let Some(last) = batch.last() {
                let next = last.position;
                let parked = self.publish_batch(&mut conn, &producer, &batch).await?;
                let sent = (batch.len() - parked.len()) as u64;
                outbox::save_cursor(&mut conn, name, next, sent).await?;
                cursor = next;
                published += sent;
                metrics::counter!("relay_published_events_total").increment(sent);
                self.status.send_modify(|s| {
                    s.cursor = cursor;
                    s.published = published;
                    s.stuck = false;
                    s.failing_since = None;
                });
                metrics::gauge!("relay_stuck").set(0.0);
            }
            if batch.is_empty() || last_lag.elapsed() >= LAG_EVERY {
                let lag = log::backlog(&mut conn, cursor).await?;
                self.report_lag(cursor, lag);
                last_lag = Instant::now();
            }
            if batch.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.idle_poll) => {}
                    _ = self.wake.notified() => {}
                }
            }
        }
    }

    /// `events` in the form they are published in: sealed personal fields stay sealed
    /// (the relay never opens them: Kafka's copies go unreadable with their keys), with
    /// placeholders where the contract's schema has the fields
    /// (`event_store::protect::for_publishing`). A malformed box leaves its event
    /// undecodable, so it is parked with the reason, as any such event.
    fn publishable(mut events: Vec<StoredEvent>) -> Vec<StoredEvent> {
        for e in &mut events {
            if let Err(error) = protect::for_publishing(&mut e.payload, &e.event_type) {
                tracing::error!(event_id = %e.event_id, %error, "a malformed sealed event; it will be parked");
            }
        }
        events
    }

    /// Publishes a batch; parks what cannot be published, and every later event of an
    /// aggregate that has a parked one. Returns the parked events.
    async fn publish_batch(
        &self,
        conn: &mut PgConnection,
        producer: &rdkafka::producer::FutureProducer,
        batch: &[StoredEvent],
    ) -> Result<Vec<RelayParked>, RelayError> {
        let name = self.config.name.as_str();
        let mut streams: Vec<(String, String)> = batch
            .iter()
            .map(|e| (e.aggregate_type.clone(), e.aggregate_id.clone()))
            .collect();
        streams.sort();
        streams.dedup();
        let blocked = outbox::parked_streams(conn, name, &streams).await?;
        let outcomes = publish::publish(&self.config.kafka, producer, batch, &blocked).await?;
        let parked: Vec<RelayParked> = batch
            .iter()
            .zip(outcomes)
            .filter_map(|(e, outcome)| match outcome {
                Outcome::Published => None,
                Outcome::Parked(reason) => Some(RelayParked {
                    aggregate_type: e.aggregate_type.clone(),
                    aggregate_id: e.aggregate_id.clone(),
                    sequence: e.sequence,
                    event_id: e.event_id,
                    reason,
                }),
            })
            .collect();
        if !parked.is_empty() {
            outbox::park(conn, name, &parked).await?;
            self.parked_more(conn, &parked).await?;
        }
        Ok(parked)
    }

    async fn parked_more(
        &self,
        conn: &mut PgConnection,
        parked: &[RelayParked],
    ) -> Result<(), RelayError> {
        for p in parked {
            tracing::error!(
                aggregate_type = %p.aggregate_type,
                aggregate = %p.aggregate_id,
                sequence = p.sequence,
                event_id = %p.event_id,
                reason = %p.reason,
                "event parked on the relay; its aggregate's later events wait behind it"
            );
        }
        metrics::counter!("relay_parked_events_total").increment(parked.len() as u64);
        let total = outbox::parked_count(conn, &self.config.name).await?;
        metrics::gauge!("relay_parked_events").set(total as f64);
        self.status.send_modify(|s| s.parked = total);
        Ok(())
    }

    /// Publishes parked events again, each aggregate's in sequence order, stopping an
    /// aggregate at its first event that still cannot be published. Returns how many
    /// were published.
    async fn redrive(
        &self,
        conn: &mut PgConnection,
        producer: &rdkafka::producer::FutureProducer,
    ) -> Result<u64, RelayError> {
        let name = self.config.name.as_str();
        let parked = outbox::parked(conn, name, i64::MAX).await?;
        tracing::info!(name, parked = parked.len(), "re-driving parked events");
        let mut failed: std::collections::HashSet<(String, String)> = Default::default();
        let mut republished = 0u64;
        for p in parked {
            let stream = (p.aggregate_type.clone(), p.aggregate_id.clone());
            if failed.contains(&stream) {
                continue;
            }
            let stored = log::aggregate_events(
                &mut *conn,
                &p.aggregate_type,
                &p.aggregate_id,
                p.sequence..=p.sequence,
            )
            .await?;
            let stored = Self::publishable(stored);
            // One event at a time, so a broker that refuses it (its own limit is lower,
            // say) leaves it parked rather than stopping the relay.
            let outcomes =
                match publish::publish(&self.config.kafka, producer, &stored, &Default::default())
                    .await
                {
                    Ok(outcomes) => outcomes,
                    Err(e) => vec![Outcome::Parked(e.to_string())],
                };
            match outcomes.first() {
                Some(Outcome::Published) => {
                    outbox::unpark(conn, name, &p).await?;
                    republished += 1;
                }
                Some(Outcome::Parked(reason)) => {
                    tracing::warn!(aggregate = %p.aggregate_id, sequence = p.sequence, %reason, "still cannot be published");
                    failed.insert(stream);
                }
                None => {
                    tracing::error!(aggregate = %p.aggregate_id, sequence = p.sequence, "parked event is not in the event store");
                    failed.insert(stream);
                }
            }
        }
        metrics::counter!("relay_published_events_total").increment(republished);
        outbox::add_published(conn, name, republished).await?;
        let total = outbox::parked_count(conn, name).await?;
        metrics::gauge!("relay_parked_events").set(total as f64);
        self.status.send_modify(|s| {
            s.parked = total;
            s.published += republished;
        });
        tracing::info!(name, republished, still_parked = total, "re-drive done");
        Ok(republished)
    }
}
