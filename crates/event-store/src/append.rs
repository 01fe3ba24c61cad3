//! Group commit: the appends of concurrent commands written by one statement, in one
//! transaction, with one WAL flush.
//!
//! A command hands its events (one *unit*: consecutive sequences of one aggregate) to the
//! [`Appender`] and waits for its own outcome. Writer tasks take every unit that is ready
//! (at most [`Appender::set_max_units`]) and insert them with one multi-row `INSERT`,
//! which is its own transaction: either all of the batch is durable or none of it is.
//!
//! Invariants:
//! - A unit is answered only after the commit that holds it (acknowledged means durable;
//!   the server's default `synchronous_commit` is not touched).
//! - One unit's failure is its own: when the server refuses a batch of several units (a
//!   sequence another replica wrote first, an idempotency key already taken, a row the
//!   table refuses), nothing of it was written, and its units are written again one per
//!   statement, so each gets the answer it would have had alone.
//! - An outcome the server did not report (the connection broke, the database is
//!   restarting) is never retried here: the batch may have committed, and writing it
//!   again could only conflict. Every unit of it gets an "unavailable" error, as a lone
//!   append would.
//! - Rows keep the order they were handed in (a unit's sequences ascending), so the
//!   commit order (`tx_id`, `global_position`) follows each aggregate's sequence. Two
//!   units of one aggregate in flight together either name one another (`after`, below)
//!   or claim the same sequence, and then one of them conflicts.
//! - The idempotency trigger tells the units of one transaction apart (migration 1005):
//!   two units reusing a key in one batch conflict as they would in two transactions.
//! - A unit may be decided on the state another queued unit leaves (`after`, its
//!   [`Ticket`]): several commands of one aggregate are then decided one after another
//!   while the first still waits for its commit. Such a unit is written only after its
//!   predecessor committed (in an earlier statement, or earlier in the same one) and
//!   fails, unwritten, as a conflict when its predecessor failed: it was decided on a
//!   state that never existed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use common::unavailable::is_unavailable;

/// Units taken into one statement at most, by default.
pub const DEFAULT_MAX_UNITS: usize = 64;
/// Rows in one statement at most (a unit is never split).
const MAX_ROWS: usize = 1_024;
/// Writer tasks: one can gather and send a batch while another waits for its commit.
const WRITERS: usize = 2;

const INSERT: &str = "INSERT INTO events \
     (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
     SELECT t, i, s, e, v, p, m \
     FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) \
          WITH ORDINALITY AS u(t, i, s, e, v, p, m, n) \
     ORDER BY n";

/// Appends units of events with group commit. Cheap to clone: every clone feeds the same
/// writers, which stop when the last clone is dropped.
#[derive(Clone)]
pub struct Appender {
    units: mpsc::UnboundedSender<Unit>,
    max_units: Arc<AtomicUsize>,
    pool: PgPool,
}

struct Unit {
    rows: Vec<SerializedEvent>,
    done: oneshot::Sender<Result<(), PersistenceError>>,
    settled: watch::Sender<Settled>,
    /// This unit's own ticket, to recognise it as another's predecessor.
    ticket: Ticket,
    after: Option<Ticket>,
}

impl Unit {
    fn complete(self, outcome: Result<(), PersistenceError>) {
        let state = if outcome.is_ok() {
            Settled::Committed
        } else {
            Settled::Failed
        };
        self.settled.send_replace(state);
        let _ = self.done.send(outcome);
    }

    /// Whether this unit was decided on a unit that failed.
    fn predecessor_failed(&self) -> bool {
        self.after
            .as_ref()
            .is_some_and(|after| after.state() == Settled::Failed)
    }
}

/// What became of a queued unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Pending,
    Committed,
    Failed,
}

/// Watches what becomes of a queued unit (for the units decided after it).
#[derive(Debug, Clone)]
pub struct Ticket(watch::Receiver<Settled>);

impl Ticket {
    pub fn state(&self) -> Settled {
        *self.0.borrow()
    }

    /// Waits until the unit is committed or failed (a unit whose writer is gone failed).
    pub async fn settled(&self) -> Settled {
        let mut watching = self.0.clone();
        match watching.wait_for(|s| *s != Settled::Pending).await {
            Ok(state) => *state,
            Err(_) => Settled::Failed,
        }
    }

    fn is(&self, other: &Ticket) -> bool {
        self.0.same_channel(&other.0)
    }
}

/// A queued unit: its ticket, and its outcome to wait for.
pub struct Queued {
    ticket: Ticket,
    outcome: oneshot::Receiver<Result<(), PersistenceError>>,
}

impl Queued {
    pub fn ticket(&self) -> Ticket {
        self.ticket.clone()
    }

    /// Waits for the commit that holds the unit, or its failure.
    pub async fn outcome(self) -> Result<(), PersistenceError> {
        self.outcome.await.map_err(|_| stopped())?
    }
}

/// The database did not say what became of an append (its connection broke, it is
/// restarting or overloaded): the command answers "unavailable", as for a lone append.
#[derive(Debug, thiserror::Error)]
#[error("the database is unavailable: {0}")]
pub struct AppendUnavailable(String);

impl Appender {
    /// Starts the writers on the current Tokio runtime.
    pub fn start(pool: PgPool) -> Self {
        let (units, queue) = mpsc::unbounded_channel();
        let queue = Arc::new(Mutex::new(queue));
        let max_units = Arc::new(AtomicUsize::new(DEFAULT_MAX_UNITS));
        for _ in 0..WRITERS {
            tokio::spawn(write_batches(
                pool.clone(),
                Arc::clone(&queue),
                Arc::clone(&max_units),
            ));
        }
        Self {
            units,
            max_units,
            pool,
        }
    }

    /// Takes at most `n` units into one statement (1: every command commits alone).
    pub fn set_max_units(&self, n: usize) {
        self.max_units.store(n.max(1), Ordering::Relaxed);
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends `rows` (one aggregate's next sequences) and waits for their commit.
    /// `OptimisticLockError`: one of the sequences, or the idempotency key in the rows'
    /// metadata, was taken first.
    pub async fn append(&self, rows: Vec<SerializedEvent>) -> Result<(), PersistenceError> {
        self.queue(rows, None).outcome().await
    }

    /// Queues `rows` now, decided on the state the unit of `after` leaves (if any), and
    /// returns at once: the outcome is awaited on the returned [`Queued`].
    pub fn queue(&self, rows: Vec<SerializedEvent>, after: Option<Ticket>) -> Queued {
        let (done, outcome) = oneshot::channel();
        let (settled, watching) = watch::channel(Settled::Pending);
        let ticket = Ticket(watching);
        let unit = Unit {
            rows,
            done,
            settled,
            ticket: ticket.clone(),
            after,
        };
        if unit.rows.is_empty() {
            unit.complete(Ok(()));
        } else if let Err(refused) = self.units.send(unit) {
            refused.0.complete(Err(stopped()));
        }
        Queued { ticket, outcome }
    }
}

fn stopped() -> PersistenceError {
    PersistenceError::ConnectionError(Box::new(AppendUnavailable(
        "the appender has stopped".into(),
    )))
}

async fn write_batches(
    pool: PgPool,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Unit>>>,
    max_units: Arc<AtomicUsize>,
) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let max_units = max_units.load(Ordering::Relaxed);
            let mut rows = first.rows.len();
            let mut batch = vec![first];
            while batch.len() < max_units && rows < MAX_ROWS {
                match queue.try_recv() {
                    Ok(unit) => {
                        rows += unit.rows.len();
                        batch.push(unit);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        let batch = wait_for_predecessors(batch).await;
        if !batch.is_empty() {
            write(&pool, batch).await;
        }
    }
}

/// Units decided on a unit of an earlier statement wait for its outcome; those whose
/// predecessor failed fail now, unwritten. A predecessor in the same batch is written
/// before them by the same statement.
async fn wait_for_predecessors(batch: Vec<Unit>) -> Vec<Unit> {
    let mut ready: Vec<Unit> = Vec::with_capacity(batch.len());
    for unit in batch {
        if let Some(after) = &unit.after
            && !ready.iter().any(|earlier| earlier.ticket.is(after))
            && after.settled().await == Settled::Failed
        {
            unit.complete(Err(PersistenceError::OptimisticLockError));
            continue;
        }
        ready.push(unit);
    }
    ready
}

/// Writes `batch` in one statement; when the server refuses it and it holds several
/// units, writes them one by one so each has its own outcome.
async fn write(pool: &PgPool, mut batch: Vec<Unit>) {
    let result = insert(pool, batch.iter().flat_map(|u| &u.rows)).await;
    match result {
        Ok(()) => {
            for unit in batch {
                unit.complete(Ok(()));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(unit) = batch.pop() {
                unit.complete(Err(outcome(e)));
            }
        }
        Err(e) if refused(&e) => {
            // In order: a unit whose predecessor just failed is not written.
            for unit in batch {
                if unit.predecessor_failed() {
                    unit.complete(Err(PersistenceError::OptimisticLockError));
                    continue;
                }
                let result = insert(pool, unit.rows.iter()).await.map_err(outcome);
                unit.complete(result);
            }
        }
        Err(e) => {
            // Not a refusal of the rows: what became of the batch is unknown.
            let message = e.to_string();
            for unit in batch {
                let error = AppendUnavailable(message.clone());
                unit.complete(Err(PersistenceError::ConnectionError(Box::new(error))));
            }
        }
    }
}

/// The server answered that it refused the statement (so nothing of it was written), for
/// a reason of the rows rather than of the database's state.
fn refused(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(_)) && !is_unavailable(e)
}

/// A failed insert as cqrs-es's error: a taken sequence or key is a conflict (the command
/// reloads and decides again); an unavailable database a connection error (503); any
/// other refusal the database's own error.
fn outcome(e: sqlx::Error) -> PersistenceError {
    if matches!(&e, sqlx::Error::Database(db) if db.is_unique_violation()) {
        PersistenceError::OptimisticLockError
    } else if is_unavailable(&e) {
        PersistenceError::ConnectionError(Box::new(e))
    } else {
        PersistenceError::UnknownError(Box::new(e))
    }
}

async fn insert<'a>(
    pool: &PgPool,
    rows: impl Iterator<Item = &'a SerializedEvent>,
) -> Result<(), sqlx::Error> {
    let (mut types, mut ids, mut sequences, mut names, mut versions, mut payloads, mut metadata) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for row in rows {
        types.push(row.aggregate_type.as_str());
        ids.push(row.aggregate_id.as_str());
        sequences.push(row.sequence as i64);
        names.push(row.event_type.as_str());
        versions.push(row.event_version.as_str());
        payloads.push(&row.payload);
        metadata.push(&row.metadata);
    }
    sqlx::query(INSERT)
        .bind(types)
        .bind(ids)
        .bind(sequences)
        .bind(names)
        .bind(versions)
        .bind(payloads)
        .bind(metadata)
        .execute(pool)
        .await?;
    Ok(())
}
