//! Re-drive: apply parked events again once their cause is fixed, each aggregate's in
//! sequence order, reading every event from the event store (the source of truth,
//! whatever the Kafka record looked like). Safe to run while the projector consumes.

use std::collections::HashSet;

use event_store::{Reader, log};
use tokio::sync::watch;

use crate::apply::{Sink, Target};
use crate::bookkeeping::{self, Parked};
use crate::envelope::{Envelope, EventRef};
use crate::rebuild::WorkDone;
use crate::sink::{ApplyError, Pass};
use crate::{ProjectionError, generation};

/// Result of a re-drive.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RedriveReport {
    pub applied: u64,
    pub still_parked: u64,
}

/// Parked rows read per query.
const PAGE: i64 = 200;

async fn stored_envelope(store: &Reader, at: &Parked) -> Result<Envelope, ApplyError> {
    let stored = log::aggregate_events(
        store.pool(),
        &at.aggregate_type,
        &at.aggregate_id,
        at.sequence..=at.sequence,
    )
    .await?;
    let row = stored
        .into_iter()
        .next()
        .ok_or_else(|| ApplyError::Rejected("parked event is not in the event store".into()))?;
    crate::apply::envelope_of(store, row).await
}

/// Applies parked events in sequence order per aggregate, stopping an aggregate at its
/// first failure (the event stays parked with its original error, one attempt more).
/// A database that is unavailable ends the re-drive with an error; run it again.
pub async fn redrive(
    store: impl Into<Reader>,
    sink: &dyn Sink,
) -> Result<RedriveReport, ProjectionError> {
    redrive_watched(store, sink, &watch::Sender::new(WorkDone::default())).await
}

/// Asks the running projector of `projection` to re-drive its parked events (it takes
/// the request within a second or so). False when no projection of that name exists
/// (nor any: no projector has migrated this database yet).
pub async fn request_redrive(
    db: impl sqlx::PgExecutor<'_>,
    projection: &str,
) -> Result<bool, sqlx::Error> {
    let asked = sqlx::query("UPDATE projections SET redrive_requested_at = now() WHERE name = $1")
        .bind(projection)
        .execute(db)
        .await;
    match asked {
        Ok(asked) => Ok(asked.rows_affected() == 1),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Takes a pending re-drive request of `projection`, if there is one: of the replicas
/// that ask at once, one gets it.
pub async fn take_redrive_request(
    db: impl sqlx::PgExecutor<'_>,
    projection: &str,
) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE projections SET redrive_requested_at = NULL \
         WHERE name = $1 AND redrive_requested_at IS NOT NULL",
    )
    .bind(projection)
    .execute(db)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// How many events of `sink`'s live generation are parked now.
pub async fn parked_now(store: &Reader, sink: &dyn Sink) -> Result<u64, ProjectionError> {
    let mut conn = store.pool().acquire().await?;
    Ok(parked_in(&mut conn, sink.name()).await?)
}

/// How many events of `projection`'s live generation are parked now (none without one).
pub async fn parked_in(
    conn: &mut sqlx::PgConnection,
    projection: &str,
) -> Result<u64, sqlx::Error> {
    let Some(schema) = generation::live_schema(conn, projection).await? else {
        return Ok(0);
    };
    Ok(bookkeeping::parked_count(conn, &schema).await?.max(0) as u64)
}

/// [`redrive`], telling `progress` how many parked events it has tried of those parked.
pub async fn redrive_watched(
    store: impl Into<Reader>,
    sink: &dyn Sink,
    progress: &watch::Sender<WorkDone>,
) -> Result<RedriveReport, ProjectionError> {
    let store: Reader = store.into();
    let pool = store.pool();
    let name = sink.name();
    let mut report = RedriveReport::default();
    let total = parked_now(&store, sink).await?;
    progress.send_replace(WorkDone { done: 0, total });
    let mut failed: HashSet<(String, String)> = HashSet::new();
    loop {
        let applied_before = report.applied;
        let mut after: Option<EventRef> = None;
        loop {
            let mut conn = pool.acquire().await?;
            let schema = generation::live_schema(&mut conn, name)
                .await?
                .ok_or(ProjectionError::NoGeneration(name))?;
            let page = bookkeeping::parked_page(&mut conn, &schema, after.as_ref(), PAGE).await?;
            drop(conn);
            let Some(last) = page.last() else { break };
            after = Some(EventRef {
                aggregate_type: last.aggregate_type.clone(),
                aggregate_id: last.aggregate_id.clone(),
                sequence: last.sequence,
                event_id: last.event_id,
            });
            for parked in page {
                let stream = (parked.aggregate_type.clone(), parked.aggregate_id.clone());
                progress.send_modify(|p| {
                    p.done += 1;
                    p.total = p.total.max(p.done);
                });
                if failed.contains(&stream) {
                    continue;
                }
                let result = match stored_envelope(&store, &parked).await {
                    Ok(env) => sink
                        .apply(
                            &store,
                            Target::Live,
                            std::slice::from_ref(&env),
                            Pass::Redrive,
                        )
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => report.applied += 1,
                    Err(e) if e.is_transient() => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(
                            aggregate = %parked.aggregate_id,
                            sequence = parked.sequence,
                            error = %e,
                            "re-drive failed; the event stays parked"
                        );
                        let at = EventRef {
                            aggregate_type: parked.aggregate_type,
                            aggregate_id: parked.aggregate_id,
                            sequence: parked.sequence,
                            event_id: parked.event_id,
                        };
                        let mut tx = pool.begin().await?;
                        bookkeeping::park(&mut tx, &schema, &at, None, &e.to_string()).await?;
                        tx.commit().await?;
                        failed.insert(stream);
                    }
                }
            }
        }
        // Events parked behind others while this pass ran are picked up by the next one.
        if report.applied == applied_before {
            break;
        }
    }
    let mut conn = pool.acquire().await?;
    let schema = generation::live_schema(&mut conn, name)
        .await?
        .ok_or(ProjectionError::NoGeneration(name))?;
    report.still_parked = bookkeeping::parked_count(&mut conn, &schema).await?.max(0) as u64;
    Ok(report)
}
