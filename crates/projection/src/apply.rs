//! Applying a batch of events to a projection: [`Sink`], the one interface the runtime,
//! rebuilds and re-drives drive, and its two implementations.
//!
//! Both keep the same rules per aggregate: an event at or below the aggregate's progress
//! is a duplicate and skipped; an event behind a parked one is parked too (queued), so an
//! aggregate's events take effect in sequence order; a gap (events the stream skipped,
//! e.g. around a rebuild's switch) is filled from the event store first.
//!
//! * [`TableSink`]: one transaction holds the progress rows (locked `FOR UPDATE`), the
//!   projection's writes, and any parking.
//! * [`EffectSink`]: no transaction is held while effects run (an HTTP call or an LLM
//!   may take longer than a transaction should stay open, and an open writing
//!   transaction holds back every reader of the log). Many calls may run at once (the
//!   runtime gives each aggregate to one call at a time); appliers in other processes
//!   are kept off an aggregate by advisory locks ([`crate::locks`]), and the progress
//!   check when a call records catches any that were not.

use std::collections::{BTreeSet, HashMap, HashSet};

use event_store::keys::KeyError;
use event_store::protect::{EventAt, Opened, ProtectError};
use event_store::{Reader, StoredEvent, log};
use schemas::personal::Pseudonym;
use sqlx::PgConnection;

use crate::bookkeeping::{self, Standing, StreamKey};
use crate::envelope::Envelope;
use crate::generation;
use crate::locks::KeyLocks;
use crate::sink::{
    ApplyError, EffectId, EffectProjection, Parallelism, Pass, Planned, TableProjection,
};

/// What happened to one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already applied (sequence at or below the aggregate's progress).
    Duplicate,
    /// An earlier event of the aggregate is parked; this one is now parked behind it.
    Queued,
    /// The event itself was parked before (a redelivery): left as it was.
    AlreadyParked,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Queued => "queued",
            Outcome::AlreadyParked => "already_parked",
        }
    }
}

/// Which generation a batch goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The live one, looked up (and held against a switch) by each transaction.
    Live,
    /// A given one: a rebuild fills a new generation before it is live.
    Generation(&'a str),
}

/// A projection the runtime can drive, whatever kind it is.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Consumer-group suffix and generation schema prefix: a lowercase identifier.
    fn name(&self) -> &'static str;

    /// Creates the projection's own tables in a fresh generation schema.
    async fn create_tables(&self, db: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error>;

    /// Brings an existing generation's tables up to date (see
    /// `TableProjection::upgrade_tables`).
    async fn upgrade_tables(
        &self,
        _db: &mut PgConnection,
        _schema: &str,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// Most events handed to [`Self::apply`] in one call by the live runtime, unless
    /// configured otherwise: a side-effect sink's batch is one round of calls to the
    /// outside world (a provider request, a burst of deliveries), kept small.
    fn batch_max(&self) -> usize {
        100
    }

    /// What one call may carry (see [`Parallelism`]); a table sink's call is a batch.
    fn parallelism(&self) -> Parallelism {
        Parallelism::Batches
    }

    /// Calls of [`Self::apply`] the live runtime runs at once, unless configured
    /// otherwise. A table sink writes one batch after the other: 1.
    fn concurrency(&self) -> usize {
        1
    }

    /// Applies `events` (each aggregate's in sequence order) to `target`, returning one
    /// outcome per event. All or nothing: on error no progress of the batch is recorded.
    /// On [`Pass::Redrive`] the events are parked ones: they are applied regardless of
    /// the parked queue and leave it.
    async fn apply(
        &self,
        store: &Reader,
        target: Target<'_>,
        events: &[Envelope],
        pass: Pass,
    ) -> Result<Vec<Outcome>, ApplyError>;
}

/// What a batch knows of one aggregate while it plans.
struct StreamState {
    /// Progress as read when the batch started.
    loaded: i64,
    last: i64,
    first_parked: Option<i64>,
    applied_to: Option<i64>,
}

fn key_of(e: &Envelope) -> StreamKey {
    (e.aggregate_type.clone(), e.aggregate_id.clone())
}

const WAITING: &str = "waiting behind a parked event";

/// A row read from the store as a projection takes it: opened (its sealed personal
/// fields, or their blanks when erased, flagged) and decoded. One that does not open or
/// decode is rejected (parked with the reason); keys that cannot be read are waited for.
pub(crate) async fn envelope_of(
    store: &Reader,
    mut stored: StoredEvent,
) -> Result<Envelope, ApplyError> {
    let opened = store.open_stored(&mut stored).await.map_err(not_opened)?;
    let mut envelope =
        Envelope::from_store(stored).map_err(|e| ApplyError::Rejected(e.to_string()))?;
    envelope.erased = opened == Opened::Erased;
    resolve_user(store, &mut envelope).await?;
    Ok(envelope)
}

/// The envelope's caller by their id, from how it is stored ([`Envelope::actor`]).
async fn resolve_user(store: &Reader, e: &mut Envelope) -> Result<(), ApplyError> {
    if let Some(actor) = e.actor.as_deref().filter(|a| Pseudonym::parse(a).is_some()) {
        e.user_id = Some(store.actor(&e.tenant_id, actor).await.map_err(not_opened)?);
    }
    Ok(())
}

/// Whether a record carries something stored otherwise than it is read: sealed fields,
/// or people named by pseudonyms.
fn stored_otherwise(e: &Envelope) -> bool {
    e.event.sealed().is_some()
        || !e.event.event_type().actors().is_empty()
        || e.actor.as_deref().and_then(Pseudonym::parse).is_some()
}

/// Why an event did not open: keys that cannot be read are waited for (the database, or a
/// master key that does not open them: the deployment's to fix), anything else is the
/// event's own fault.
fn not_opened(e: ProtectError) -> ApplyError {
    match e {
        ProtectError::Keys(KeyError::Database(e)) => e.into(),
        ProtectError::Keys(e) => ApplyError::Unavailable(e.to_string()),
        e => ApplyError::Rejected(e.to_string()),
    }
}

/// `events` with the personal fields Kafka's records carry sealed opened (or blanked and
/// flagged erased) and the people they name by pseudonyms resolved, as the store's rows
/// are ([`envelope_of`]); borrowed when there is nothing of either.
pub(crate) async fn opened_records<'e>(
    store: &Reader,
    events: &'e [Envelope],
) -> Result<std::borrow::Cow<'e, [Envelope]>, ApplyError> {
    if !events.iter().any(stored_otherwise) {
        return Ok(std::borrow::Cow::Borrowed(events));
    }
    let mut opened = events.to_vec();
    for e in &mut opened {
        resolve_user(store, e).await?;
        if e.event.sealed().is_none() && e.event.event_type().actors().is_empty() {
            continue;
        }
        let event_type = e.event.event_type();
        let rejected = |err: serde_json::Error| ApplyError::Rejected(err.to_string());
        let mut payload = serde_json::to_value(&e.event).map_err(rejected)?;
        let at = EventAt {
            tenant: &e.tenant_id,
            aggregate_type: &e.aggregate_type,
            aggregate_id: &e.aggregate_id,
            sequence: e.sequence,
            event_type: event_type.as_str(),
        };
        let done = store.open(&at, &mut payload).await.map_err(not_opened)?;
        e.event = serde_json::from_value(payload).map_err(rejected)?;
        e.erased = done == Opened::Erased;
    }
    Ok(std::borrow::Cow::Owned(opened))
}

/// The events `last + 1 .. event.sequence - 1` of the event's aggregate, from the store.
async fn fill_gap(
    db: &mut PgConnection,
    store: &Reader,
    event: &Envelope,
    last: i64,
) -> Result<Vec<Envelope>, ApplyError> {
    let missing = log::aggregate_events(
        &mut *db,
        &event.aggregate_type,
        &event.aggregate_id,
        last + 1..=event.sequence - 1,
    )
    .await?;
    if missing.len() as i64 != event.sequence - 1 - last {
        return Err(ApplyError::Rejected(format!(
            "events {}..{} of {} {} are not in the event store",
            last + 1,
            event.sequence - 1,
            event.aggregate_type,
            event.aggregate_id
        )));
    }
    let mut filled = Vec::with_capacity(missing.len());
    for stored in missing {
        filled.push(envelope_of(store, stored).await?);
    }
    Ok(filled)
}

/// Decides, event by event, what to apply. Reads every aggregate's standing in one go
/// (locking the progress rows with `lock_rows`); queued events are parked through `db`
/// right away.
async fn plan(
    db: &mut PgConnection,
    store: &Reader,
    schema: &str,
    events: &[Envelope],
    pass: Pass,
    lock_rows: bool,
) -> Result<(Vec<Outcome>, Vec<Envelope>, HashMap<StreamKey, StreamState>), ApplyError> {
    let keys: Vec<StreamKey> = events.iter().map(key_of).collect();
    let standings = bookkeeping::standings(db, schema, &keys, lock_rows).await?;
    let mut streams: HashMap<StreamKey, StreamState> = keys
        .into_iter()
        .map(|key| {
            let standing = standings.get(&key).copied().unwrap_or(Standing {
                last: 0,
                first_parked: None,
            });
            let state = StreamState {
                loaded: standing.last,
                last: standing.last,
                first_parked: standing.first_parked,
                applied_to: None,
            };
            (key, state)
        })
        .collect();
    let mut outcomes = Vec::with_capacity(events.len());
    let mut to_apply = Vec::with_capacity(events.len());
    for e in events {
        let Some(state) = streams.get_mut(&key_of(e)) else {
            continue;
        };
        if e.sequence <= state.last {
            outcomes.push(Outcome::Duplicate);
            continue;
        }
        if pass != Pass::Redrive && state.first_parked.is_some() {
            let newly = bookkeeping::park(db, schema, &e.event_ref(), None, WAITING).await?;
            outcomes.push(if newly {
                Outcome::Queued
            } else {
                Outcome::AlreadyParked
            });
            continue;
        }
        if e.sequence > state.last + 1 {
            to_apply.extend(fill_gap(db, store, e, state.last).await?);
        }
        to_apply.push(e.clone());
        state.last = e.sequence;
        state.applied_to = Some(e.sequence);
        outcomes.push(Outcome::Applied);
    }
    Ok((outcomes, to_apply, streams))
}

/// The streams a batch moved, and where to.
fn moved(streams: &HashMap<StreamKey, StreamState>) -> Vec<(&StreamKey, i64)> {
    streams
        .iter()
        .filter_map(|(key, state)| state.applied_to.map(|to| (key, to)))
        .collect()
}

async fn resolve(
    tx: &mut PgConnection,
    name: &'static str,
    target: Target<'_>,
) -> Result<String, ApplyError> {
    match target {
        Target::Generation(schema) => Ok(schema.to_owned()),
        Target::Live => generation::live_schema_fenced(tx, name)
            .await?
            .ok_or_else(|| {
                ApplyError::Rejected(format!("projection {name} has no live generation"))
            }),
    }
}

/// A [`TableProjection`] driven in one transaction per batch.
pub struct TableSink<P>(pub P);

#[async_trait::async_trait]
impl<P: TableProjection> Sink for TableSink<P> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    async fn create_tables(&self, db: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
        self.0.create_tables(db, schema).await
    }

    async fn upgrade_tables(&self, db: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
        self.0.upgrade_tables(db, schema).await
    }

    /// A table sink's batch is one transaction of a few multi-row statements, whatever its
    /// length: the larger, the fewer round trips per event (a rebuild's batch is the same).
    fn batch_max(&self) -> usize {
        1_000
    }

    async fn apply(
        &self,
        store: &Reader,
        target: Target<'_>,
        events: &[Envelope],
        pass: Pass,
    ) -> Result<Vec<Outcome>, ApplyError> {
        let events = &*opened_records(store, events).await?;
        let mut tx = store.pool().begin().await?;
        let schema = resolve(&mut tx, self.name(), target).await?;
        let (outcomes, to_apply, streams) =
            plan(&mut tx, store, &schema, events, pass, true).await?;
        if !to_apply.is_empty() {
            self.0.apply(&mut tx, &schema, &to_apply, pass).await?;
        }
        bookkeeping::set_progress(&mut tx, &schema, &moved(&streams)).await?;
        if !to_apply.is_empty() {
            bookkeeping::announce(&mut tx, self.name()).await?;
        }
        unpark_redriven(&mut tx, &schema, events, &outcomes, pass).await?;
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// On a re-drive, the events applied (or found applied already) leave the parked queue.
async fn unpark_redriven(
    tx: &mut PgConnection,
    schema: &str,
    events: &[Envelope],
    outcomes: &[Outcome],
    pass: Pass,
) -> Result<(), sqlx::Error> {
    if pass != Pass::Redrive {
        return Ok(());
    }
    for (e, outcome) in events.iter().zip(outcomes) {
        if matches!(outcome, Outcome::Applied | Outcome::Duplicate) {
            bookkeeping::unpark(tx, schema, &e.event_ref()).await?;
        }
    }
    Ok(())
}

/// An [`EffectProjection`] driven around its effects: plan, perform, then record.
pub struct EffectSink<P> {
    projection: P,
    /// This sink's aggregate locks, against appliers in other processes.
    locks: KeyLocks,
}

impl<P: EffectProjection> EffectSink<P> {
    pub fn new(projection: P) -> Self {
        EffectSink {
            projection,
            locks: KeyLocks::default(),
        }
    }

    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// Plans, performs and records one batch while its aggregates are locked.
    async fn apply_locked(
        &self,
        store: &Reader,
        target: Target<'_>,
        events: &[Envelope],
        pass: Pass,
    ) -> Result<Vec<Outcome>, ApplyError> {
        let name = self.projection.name();
        let mut conn = store.pool().acquire().await?;
        let schema = match target {
            Target::Generation(s) => s.to_owned(),
            Target::Live => generation::live_schema(&mut conn, name)
                .await?
                .ok_or_else(|| {
                    ApplyError::Rejected(format!("projection {name} has no live generation"))
                })?,
        };
        let (outcomes, to_apply, streams) =
            plan(&mut conn, store, &schema, events, pass, false).await?;
        drop(conn);
        let mut applied = Vec::with_capacity(to_apply.len());
        for e in to_apply {
            let planned = self
                .projection
                .plan(&e)
                .into_iter()
                .enumerate()
                .map(|(i, effect)| Planned {
                    id: EffectId::of(name, e.event_id, i),
                    event_id: e.event_id,
                    tenant_id: e.tenant_id.clone(),
                    effect,
                })
                .collect::<Vec<_>>();
            applied.push((e, planned));
        }
        let mut all: Vec<&Planned<P::Effect>> = applied.iter().flat_map(|(_, p)| p).collect();
        // A rebuild tells the sink and leaves the ledger alone; live and re-drive passes
        // skip what the ledger says was done already.
        let ledger = self.projection.uses_ledger();
        if ledger && pass != Pass::Rebuild && !all.is_empty() {
            let ids: Vec<EffectId> = all.iter().map(|p| p.id).collect();
            let mut conn = store.pool().acquire().await?;
            let done = bookkeeping::performed(&mut conn, name, &ids).await?;
            all.retain(|p| !done.contains(&p.id));
        }
        if !all.is_empty() {
            let batch: Vec<Planned<P::Effect>> = all.iter().map(|p| (*p).clone()).collect();
            self.projection.perform(&schema, &batch, pass).await?;
        }
        let performed: HashSet<EffectId> = all.iter().map(|p| p.id).collect();

        let mut tx = store.pool().begin().await?;
        let now = resolve(&mut tx, name, target).await?;
        if now != schema {
            // A rebuild switched generations while the effects ran: plan again against
            // the new one (the effects keep their ids, so performing them again is harmless).
            return Err(ApplyError::Unavailable(format!(
                "{name} switched from {schema} to {now} during the batch"
            )));
        }
        let moved = moved(&streams);
        let keys: Vec<StreamKey> = moved.iter().map(|(key, _)| (*key).clone()).collect();
        let now = bookkeeping::standings(&mut tx, &schema, &keys, true).await?;
        for (key, _) in &moved {
            let loaded = streams[*key].loaded;
            let last = now.get(*key).map_or(0, |s| s.last);
            if last != loaded {
                // Another applier moved this aggregate while the effects ran (possible only
                // if the locks were lost): plan again from where it is now.
                return Err(ApplyError::Unavailable(format!(
                    "{} {} moved from {loaded} to {last} during the batch",
                    key.0, key.1
                )));
            }
        }
        bookkeeping::set_progress(&mut tx, &schema, &moved).await?;
        self.projection
            .record(&mut tx, &schema, &applied, pass)
            .await?;
        if ledger && pass != Pass::Rebuild {
            for (e, planned) in &applied {
                let ids: Vec<EffectId> = planned
                    .iter()
                    .map(|p| p.id)
                    .filter(|id| performed.contains(id))
                    .collect();
                bookkeeping::record_performed(&mut tx, name, &e.event_ref(), &ids, pass).await?;
            }
        }
        if !applied.is_empty() {
            bookkeeping::announce(&mut tx, name).await?;
        }
        unpark_redriven(&mut tx, &schema, events, &outcomes, pass).await?;
        tx.commit().await?;
        Ok(outcomes)
    }
}

#[async_trait::async_trait]
impl<P: EffectProjection> Sink for EffectSink<P> {
    fn name(&self) -> &'static str {
        self.projection.name()
    }

    async fn create_tables(&self, db: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
        self.projection.create_tables(db, schema).await
    }

    async fn upgrade_tables(&self, db: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
        self.projection.upgrade_tables(db, schema).await
    }

    fn parallelism(&self) -> Parallelism {
        self.projection.parallelism()
    }

    fn concurrency(&self) -> usize {
        self.projection.concurrency()
    }

    async fn apply(
        &self,
        store: &Reader,
        target: Target<'_>,
        events: &[Envelope],
        pass: Pass,
    ) -> Result<Vec<Outcome>, ApplyError> {
        let events = &*opened_records(store, events).await?;
        let name = self.projection.name();
        let keys: BTreeSet<String> = events
            .iter()
            .map(|e| format!("{name}/{}/{}", e.aggregate_type, e.aggregate_id))
            .collect();
        let held = self
            .locks
            .acquire(store.pool(), keys.into_iter().collect())
            .await?;
        let result = self.apply_locked(store, target, events, pass).await;
        self.locks.release(held).await;
        result
    }
}
