//! The two kinds of projection, and what the runtime tells them.
//!
//! * [`TableProjection`]: the projection's effect is rows in its own PostgreSQL tables.
//!   The runtime applies a batch of events and records each aggregate's progress in the
//!   same transaction, so an event is applied exactly once however often it is delivered.
//! * [`EffectProjection`]: the effect lives outside PostgreSQL (a vector store, an HTTP
//!   endpoint, a command sent back to the command side). No transaction can span it, so
//!   the runtime works around it: it plans the effects of a batch ([`EffectProjection::plan`],
//!   each with a stable [`EffectId`]), has the sink perform them, then records progress and
//!   a ledger row per effect in one transaction. A crash between the two re-performs the
//!   same effects with the same ids, which the sink makes harmless (the id is the vector's
//!   point id, the webhook's id, the command's idempotency key): an effect is done at least
//!   once and observed once.
//!
//! Both are told the [`Pass`]: live consumption, a re-drive of parked events, or a
//! rebuild replaying history (where a webhook must not be sent again).

use sqlx::PgConnection;
use uuid::Uuid;

use crate::envelope::Envelope;

/// Effect calls in flight at once per process, by default: a model call waits seconds,
/// so a process answering many conversations needs many at once, and one waiting costs a
/// few kilobytes. Providers' own limits are the router's (requests and tokens per minute,
/// calls at once per provider).
pub const DEFAULT_EFFECT_CONCURRENCY: usize = 256;

/// What one call of a sink may carry, so that calls can run side by side. Whatever it
/// is, one aggregate's events are applied in order and never by two calls at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Parallelism {
    /// Events of one aggregate per call.
    PerAggregate,
    /// Events of many aggregates per call, up to the batch size.
    Batches,
}

/// Why the runtime hands an event to a projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pass {
    /// Consumed from Kafka: the event is news.
    Live,
    /// A parked event applied again after its cause was fixed: it never took effect.
    Redrive,
    /// History replayed into a new generation: its effects happened long ago (a
    /// side-effect sink must not repeat what the outside world already saw).
    Rebuild,
}

impl Pass {
    pub fn as_str(self) -> &'static str {
        match self {
            Pass::Live => "live",
            Pass::Redrive => "redrive",
            Pass::Rebuild => "rebuild",
        }
    }

    /// True for a rebuild: the events are history, not news.
    pub fn is_replay(self) -> bool {
        self == Pass::Rebuild
    }
}

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The projection refuses the event; retrying is unlikely to help. Counted against
    /// the attempts before the event is parked.
    #[error("{0}")]
    Rejected(String),
    /// Something outside the event is unavailable (the sink's endpoint, a provider): the
    /// runtime waits and retries without counting attempts, so an outage parks nothing.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ApplyError {
    /// Failures of the surroundings rather than of the event: the database is down,
    /// restarting, overloaded, slow (statement timeout), busy (lock not available), or a
    /// transaction lost a deadlock or serialisation race; or the sink is unavailable.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Rejected(_) => false,
            ApplyError::Unavailable(_) => true,
            ApplyError::Database(e) => event_store::is_unavailable(e),
        }
    }
}

/// A projection kept in PostgreSQL tables of its own.
#[async_trait::async_trait]
pub trait TableProjection: Send + Sync + 'static {
    /// Consumer-group suffix and generation schema prefix: a lowercase identifier.
    fn name(&self) -> &'static str;

    /// Creates the projection's tables in `schema`, a fresh generation.
    async fn create_tables(&self, db: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error>;

    /// Brings the tables of an existing generation up to what [`Self::create_tables`]
    /// creates now (idempotent `ALTER TABLE ... IF NOT EXISTS`), at every start. A change
    /// that cannot be made in place needs a rebuild instead.
    async fn upgrade_tables(
        &self,
        _db: &mut PgConnection,
        _schema: &str,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// Applies `events` in order (each aggregate's in sequence, without gaps) inside the
    /// runtime's transaction; must not commit. One call may carry many events.
    async fn apply(
        &self,
        db: &mut PgConnection,
        schema: &str,
        events: &[Envelope],
        pass: Pass,
    ) -> Result<(), ApplyError>;
}

/// Stable id of one effect: the same event always plans the same ids. Sinks use it as the
/// idempotency key the outside world de-duplicates by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct EffectId(pub Uuid);

impl EffectId {
    /// The id of effect number `index` of `event_id` in projection `projection`.
    pub fn of(projection: &str, event_id: Uuid, index: usize) -> EffectId {
        const NAMESPACE: Uuid = Uuid::from_u128(0x7468_7265_6164_6c69_6e65_0000_0000_0001);
        EffectId(Uuid::new_v5(
            &NAMESPACE,
            format!("{projection}/{event_id}/{index}").as_bytes(),
        ))
    }
}

impl std::fmt::Display for EffectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One planned effect: its stable id, the event that called for it, what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned<E> {
    pub id: EffectId,
    pub event_id: Uuid,
    pub tenant_id: String,
    pub effect: E,
}

/// Why performing effects failed.
#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    /// The effect was refused (a 4xx, a bad payload): counted against the attempts, then
    /// the event is parked.
    #[error("{0}")]
    Rejected(String),
    /// The destination is unavailable (timeout, 429, 5xx that says retry): retried
    /// without counting attempts, so an outage parks nothing.
    #[error("{0}")]
    Unavailable(String),
}

impl From<EffectError> for ApplyError {
    fn from(e: EffectError) -> Self {
        match e {
            EffectError::Rejected(r) => ApplyError::Rejected(r),
            EffectError::Unavailable(r) => ApplyError::Unavailable(r),
        }
    }
}

/// A projection whose effects live outside PostgreSQL.
#[async_trait::async_trait]
pub trait EffectProjection: Send + Sync + 'static {
    /// What one effect is (a notification, a vector upsert, a command).
    type Effect: Send + Sync + Clone + 'static;

    /// Consumer-group suffix and generation schema prefix: a lowercase identifier.
    fn name(&self) -> &'static str;

    /// Tables of the projection's own in `schema` (what [`EffectProjection::record`]
    /// writes), if any.
    async fn create_tables(
        &self,
        _db: &mut PgConnection,
        _schema: &str,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// Brings an existing generation's tables up to what [`Self::create_tables`] creates
    /// now (idempotent DDL), at every start; see `TableProjection::upgrade_tables`.
    async fn upgrade_tables(
        &self,
        _db: &mut PgConnection,
        _schema: &str,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// The effects `event` calls for, in order; most events call for none. Deterministic:
    /// a redelivered event must plan the same effects.
    fn plan(&self, event: &Envelope) -> Vec<Self::Effect>;

    /// Carries out `effects` for the generation `schema`, each keyed by its [`EffectId`]
    /// so that doing one twice is harmless. On [`Pass::Rebuild`] the events are history:
    /// a sink whose effects the outside world has seen (a message sent) does nothing; one
    /// that rebuilds derived data (an index) does it again, into what belongs to `schema`.
    async fn perform(
        &self,
        schema: &str,
        effects: &[Planned<Self::Effect>],
        pass: Pass,
    ) -> Result<(), EffectError>;

    /// How the runtime may run this projection's effects side by side: the default,
    /// [`Parallelism::PerAggregate`], one aggregate's events per call, many calls at once
    /// (each effect waits on a server of its own: a model, a mail relay). A projection
    /// whose effects gain from being sent together (embeddings in one request) says
    /// [`Parallelism::Batches`].
    fn parallelism(&self) -> Parallelism {
        Parallelism::PerAggregate
    }

    /// Calls of [`Self::perform`] in flight at once in one process, unless
    /// `PROJECTOR_CONCURRENCY` says otherwise (default [`DEFAULT_EFFECT_CONCURRENCY`]:
    /// effects wait on other servers, and a waiting call costs little). A projection
    /// whose effects use this process's own CPU (a local model) says 1; one whose
    /// destination takes few calls at once (a mail relay) says fewer.
    fn concurrency(&self) -> usize {
        DEFAULT_EFFECT_CONCURRENCY
    }

    /// Whether the runtime keeps a ledger of performed effects and skips, on live and
    /// re-drive passes, those it says were done (the default: what the outside world saw
    /// must not happen twice). A sink of derived data whose effects are idempotent and
    /// belong to a generation (an index's upserts) says `false`: every generation gets
    /// every effect, whatever another generation was given.
    fn uses_ledger(&self) -> bool {
        true
    }

    /// Runs in the transaction that records progress, after the effects were performed:
    /// the projection's own rows (an inbox of what was sent). Gets every applied event of
    /// the batch with the effects it planned. Must not commit.
    async fn record(
        &self,
        _db: &mut PgConnection,
        _schema: &str,
        _applied: &[(Envelope, Vec<Planned<Self::Effect>>)],
        _pass: Pass,
    ) -> Result<(), ApplyError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_databases_and_sinks_are_transient_refusals_are_not() {
        assert!(ApplyError::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!ApplyError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(ApplyError::Unavailable("down".into()).is_transient());
        assert!(!ApplyError::Rejected("bad".into()).is_transient());
    }

    #[test]
    fn effect_ids_are_stable_per_projection_event_and_index() {
        let e = Uuid::new_v4();
        assert_eq!(EffectId::of("n", e, 0), EffectId::of("n", e, 0));
        assert_ne!(EffectId::of("n", e, 0), EffectId::of("n", e, 1));
        assert_ne!(EffectId::of("n", e, 0), EffectId::of("m", e, 0));
    }
}
