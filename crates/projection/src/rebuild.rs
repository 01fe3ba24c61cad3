//! Rebuild: replay the event store into a fresh generation, switch the live pointer to
//! it, then catch up. Readers keep reading the old generation until the switch commits;
//! the live projector keeps consuming and follows the switch (an event it applies to the
//! new generation before the catch-up reaches it fills its gap from the event store).
//! Every event is applied with [`Pass::Rebuild`]: a side-effect sink knows it is history.

use std::time::Instant;

use event_store::{Reader, log};
use schemas::CommitPosition;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::apply::{Outcome, Sink, Target};
use crate::envelope::{Envelope, EventRef};
use crate::sink::{ApplyError, Pass};
use crate::{ProjectionError, bookkeeping, generation};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RebuildReport {
    pub generation: i32,
    pub schema: String,
    pub replayed: u64,
    pub parked: u64,
    pub seconds: f64,
}

/// How far a rebuild or a re-drive has got: `done` of about `total` (a rebuild's total is
/// the events stored when it started; its catch-up adds what came since; a re-drive's,
/// the events parked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkDone {
    pub done: u64,
    pub total: u64,
}

/// What a rebuild would do, without doing it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RebuildPlan {
    pub projection: &'static str,
    /// The live generation now (`None`: the projection has none yet).
    pub live_generation: Option<i32>,
    /// The generation a rebuild would fill.
    pub next_generation: i32,
    /// Events it would replay (those stored now).
    pub events: u64,
}

/// What [`rebuild`] of `sink` would do now.
pub async fn rebuild_plan(store: &Reader, sink: &dyn Sink) -> Result<RebuildPlan, ProjectionError> {
    let mut conn = store.pool().acquire().await?;
    let live = generation::live_generation(&mut conn, sink.name()).await?;
    Ok(RebuildPlan {
        projection: sink.name(),
        live_generation: live,
        next_generation: live.unwrap_or(0) + 1,
        events: log::count(&mut *conn).await?,
    })
}

/// Events per read of the store, and per batch handed to the sink.
const BATCH: i64 = 4_000;

/// Applies a batch; if the sink refuses it, applies its events one by one so that only
/// the failing ones (and those queued behind them) are parked.
async fn apply_or_park(
    store: &Reader,
    sink: &dyn Sink,
    schema: &str,
    batch: &[Envelope],
    report: &mut RebuildReport,
) -> Result<(), ProjectionError> {
    let outcomes = match sink
        .apply(store, Target::Generation(schema), batch, Pass::Rebuild)
        .await
    {
        Ok(outcomes) => outcomes,
        Err(e) if e.is_transient() => return Err(e.into()),
        Err(_) if batch.len() > 1 => {
            for one in batch {
                Box::pin(apply_or_park(
                    store,
                    sink,
                    schema,
                    std::slice::from_ref(one),
                    report,
                ))
                .await?;
            }
            return Ok(());
        }
        Err(e) => {
            park(store.pool(), schema, batch, &e.to_string(), report).await?;
            return Ok(());
        }
    };
    for outcome in outcomes {
        match outcome {
            Outcome::Applied => report.replayed += 1,
            Outcome::Queued => report.parked += 1,
            Outcome::Duplicate | Outcome::AlreadyParked => {}
        }
    }
    Ok(())
}

async fn park(
    pool: &PgPool,
    schema: &str,
    events: &[Envelope],
    error: &str,
    report: &mut RebuildReport,
) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    for e in events {
        if bookkeeping::park(&mut tx, schema, &e.event_ref(), None, error).await? {
            report.parked += 1;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// One page of the store, decoded: each event, or where it sits and why it does not decode.
struct Page {
    last: CommitPosition,
    events: Vec<Result<Envelope, (EventRef, String)>>,
}

/// The page of the store after `from`, decoded; `None` at the end.
async fn read_page(
    store: Reader,
    from: CommitPosition,
) -> Result<Option<(Page, CommitPosition)>, sqlx::Error> {
    let page = log::read_after(store.pool(), from, BATCH).await?;
    let Some(last) = page.last().map(|e| e.position) else {
        return Ok(None);
    };
    let mut events = Vec::with_capacity(page.len());
    for stored in page {
        let at = EventRef {
            aggregate_type: stored.aggregate_type.clone(),
            aggregate_id: stored.aggregate_id.clone(),
            sequence: stored.sequence,
            event_id: Some(stored.event_id),
        };
        let envelope = match crate::apply::envelope_of(&store, stored).await {
            Ok(envelope) => Ok(envelope),
            Err(ApplyError::Database(e)) => return Err(e),
            // Keys this process cannot open (another master key): the rebuild stops
            // before its switch rather than park every sealed event, as the live
            // projector waits.
            Err(ApplyError::Unavailable(reason)) => {
                return Err(sqlx::Error::Configuration(reason.into()));
            }
            Err(e) => Err(e.to_string()),
        };
        events.push(envelope.map_err(|reason| (at, reason)));
    }
    Ok(Some((Page { last, events }, last)))
}

/// Replays every committed event after `from` into `schema`; returns where it ended.
async fn replay(
    store: &Reader,
    sink: &dyn Sink,
    schema: &str,
    mut from: CommitPosition,
    report: &mut RebuildReport,
    progress: &watch::Sender<WorkDone>,
) -> Result<CommitPosition, ProjectionError> {
    // The next page is read and decoded while the sink writes this one.
    let pool = store.pool();
    let reader = store.clone();
    let mut pages = log::read_ahead(from, move |after| read_page(reader.clone(), after));
    while let Some(page) = pages.recv().await {
        let page = page?;
        from = page.last;
        let read = page.events.len() as u64;
        let mut batch = Vec::with_capacity(page.events.len());
        for event in page.events {
            match event {
                Ok(e) => batch.push(e),
                Err((at, error)) => {
                    // Apply what came before it first, so its aggregate's order holds.
                    apply_or_park(store, sink, schema, &batch, report).await?;
                    batch.clear();
                    let mut tx = pool.begin().await?;
                    if bookkeeping::park(&mut tx, schema, &at, None, &error).await? {
                        report.parked += 1;
                    }
                    tx.commit().await?;
                }
            }
        }
        if !batch.is_empty() {
            apply_or_park(store, sink, schema, &batch, report).await?;
        }
        progress.send_modify(|p| {
            p.done += read;
            p.total = p.total.max(p.done);
        });
    }
    Ok(from)
}

/// Fills a projection's first generation from the event store (with [`Pass::Rebuild`]:
/// history, not news) before it starts consuming. A new projector cannot count on Kafka
/// still holding every event: retention may have dropped old ones, and an aggregate with
/// no newer event would never reach it. Returns how many events were applied.
pub async fn bootstrap(
    store: &Reader,
    sink: &dyn Sink,
    schema: &str,
) -> Result<u64, ProjectionError> {
    let mut report = RebuildReport {
        generation: 1,
        schema: schema.to_owned(),
        replayed: 0,
        parked: 0,
        seconds: 0.0,
    };
    let unwatched = watch::Sender::new(WorkDone::default());
    replay(
        store,
        sink,
        schema,
        CommitPosition::START,
        &mut report,
        &unwatched,
    )
    .await?;
    Ok(report.replayed)
}

/// Rebuilds the projection into generation N+1 and makes it live. One rebuild at a time.
pub async fn rebuild(
    store: impl Into<Reader>,
    sink: &dyn Sink,
) -> Result<RebuildReport, ProjectionError> {
    rebuild_watched(store, sink, &watch::Sender::new(WorkDone::default())).await
}

/// [`rebuild`], telling `progress` how far it has got after each page of events.
pub async fn rebuild_watched(
    store: impl Into<Reader>,
    sink: &dyn Sink,
    progress: &watch::Sender<WorkDone>,
) -> Result<RebuildReport, ProjectionError> {
    let store: Reader = store.into();
    let pool = store.pool();
    let started = Instant::now();
    let name = sink.name();
    generation::ensure_live(pool, sink).await?;
    // The rebuild lock is a session lock on a connection of its own, never returned to
    // the pool: however this function ends, dropping the connection releases the lock.
    let mut lock = pool.acquire().await?.detach();
    sqlx::query("SELECT pg_advisory_lock(hashtext('rebuild:' || $1))")
        .bind(name)
        .execute(&mut lock)
        .await?;
    let current = generation::live_generation(&mut lock, name)
        .await?
        .ok_or(ProjectionError::NoGeneration(name))?;
    let next = current + 1;
    let schema = generation::schema_name(name, next);
    // A rebuild that died half-way left a partial generation behind: start it afresh.
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut lock)
        .await?;
    {
        let mut tx = pool.begin().await?;
        generation::create(&mut tx, sink, next).await?;
        tx.commit().await?;
    }
    let mut report = RebuildReport {
        generation: next,
        schema: schema.clone(),
        replayed: 0,
        parked: 0,
        seconds: 0.0,
    };
    let total = log::count(pool).await?;
    progress.send_replace(WorkDone { done: 0, total });
    tracing::info!(
        projection = name,
        generation = next,
        events = total,
        "rebuild: replaying the event store"
    );
    let reached = replay(
        &store,
        sink,
        &schema,
        CommitPosition::START,
        &mut report,
        progress,
    )
    .await?;
    // The switch waits for the live writers' transactions still on the old generation.
    generation::switch(&mut lock, name, next, &schema).await?;
    tracing::info!(
        projection = name,
        generation = next,
        "rebuild: switched; catching up"
    );
    replay(&store, sink, &schema, reached, &mut report, progress).await?;
    // Keep the previous generation for readers still on it; drop the one before.
    if next > 2 {
        let old = generation::schema_name(name, next - 2);
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {old} CASCADE"))
            .execute(&mut lock)
            .await?;
    }
    sqlx::query("SELECT pg_advisory_unlock(hashtext('rebuild:' || $1))")
        .bind(name)
        .execute(&mut lock)
        .await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

impl From<ApplyError> for ProjectionError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Database(e) => ProjectionError::Database(e),
            other => ProjectionError::Apply(other.to_string()),
        }
    }
}
