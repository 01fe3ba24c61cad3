//! Aggregate locks of an effect sink across processes: session advisory locks, all held
//! on one connection of the sink's own, taken without blocking it (`pg_try_advisory_lock`)
//! so that many calls in flight share it.
//!
//! Inside one process the runtime never runs two calls for one aggregate at once; these
//! locks keep another process (a replica during a rebalance, a re-drive, a rebuild) from
//! performing the same aggregate's effects meanwhile. They are an economy, not the
//! guarantee: what makes an effect count once is the progress check when it is recorded
//! and the effect ledger. So when the connection is in doubt (an error) it is closed,
//! which releases every lock it held, and calls in flight carry on unlocked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Mutex;

use crate::sink::ApplyError;

/// How long a call waits for aggregates another process holds before it gives up as
/// unavailable (the runtime then retries it later without counting an attempt).
const WAIT: Duration = Duration::from_secs(30);
const FIRST_RETRY: Duration = Duration::from_millis(20);
const MAX_RETRY: Duration = Duration::from_millis(500);

#[derive(Default)]
pub(crate) struct KeyLocks {
    /// The connection and its incarnation: locks taken on an earlier incarnation are gone.
    conn: Mutex<(Option<PgConnection>, u64)>,
    /// Set when a call holding locks was dropped before releasing them (cancelled): the
    /// connection is closed at its next use, so no lock outlives its call for long.
    leaked: Arc<AtomicBool>,
}

/// Locks held by one call; give them back with [`KeyLocks::release`]. Dropped without
/// that (the call was cancelled), it has the connection closed.
pub(crate) struct Held {
    keys: Vec<String>,
    incarnation: u64,
    leaked: Arc<AtomicBool>,
    released: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.released {
            self.leaked.store(true, Ordering::SeqCst);
        }
    }
}

impl KeyLocks {
    /// Takes every key of `keys` (all or none), waiting while another process holds one.
    pub(crate) async fn acquire(
        &self,
        pool: &PgPool,
        keys: Vec<String>,
    ) -> Result<Held, ApplyError> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut delay = FIRST_RETRY;
        loop {
            if let Some(incarnation) = self.try_acquire(pool, &keys).await? {
                return Ok(Held {
                    keys,
                    incarnation,
                    leaked: self.leaked.clone(),
                    released: false,
                });
            }
            if tokio::time::Instant::now() + delay > deadline {
                return Err(ApplyError::Unavailable(
                    "another process is applying one of these aggregates".into(),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
        }
    }

    /// One try: `Some(incarnation)` when every key was taken.
    async fn try_acquire(&self, pool: &PgPool, keys: &[String]) -> Result<Option<u64>, ApplyError> {
        let mut guard = self.conn.lock().await;
        let (conn, incarnation) = &mut *guard;
        if self.leaked.swap(false, Ordering::SeqCst) {
            *conn = None;
        }
        if conn.is_none() {
            *conn = Some(PgConnection::connect_with(&pool.connect_options()).await?);
            *incarnation += 1;
        }
        let Some(c) = conn.as_mut() else {
            unreachable!("connected above")
        };
        let taken: Result<Vec<(String, bool)>, sqlx::Error> = sqlx::query_as(
            "SELECT k, pg_try_advisory_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k",
        )
        .bind(keys)
        .fetch_all(&mut *c)
        .await;
        let taken = match taken {
            Ok(taken) => taken,
            Err(e) => {
                // Which locks it holds is in doubt: closing it releases them all.
                *conn = None;
                return Err(e.into());
            }
        };
        if taken.iter().all(|(_, ok)| *ok) {
            return Ok(Some(*incarnation));
        }
        let got: Vec<String> = taken
            .into_iter()
            .filter(|(_, ok)| *ok)
            .map(|(k, _)| k)
            .collect();
        if !got.is_empty() && unlock(c, &got).await.is_err() {
            *conn = None;
        }
        Ok(None)
    }

    /// Gives back what `held` took (nothing to do if its connection was closed since).
    pub(crate) async fn release(&self, mut held: Held) {
        let mut guard = self.conn.lock().await;
        held.released = true;
        let (conn, incarnation) = &mut *guard;
        if self.leaked.swap(false, Ordering::SeqCst) {
            *conn = None;
        }
        if *incarnation != held.incarnation {
            return;
        }
        if let Some(c) = conn.as_mut()
            && let Err(e) = unlock(c, &held.keys).await
        {
            tracing::warn!(error = %e, "releasing aggregate locks failed; closing their connection");
            *conn = None;
        }
    }
}

async fn unlock(conn: &mut PgConnection, keys: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k")
        .bind(keys)
        .execute(conn)
        .await
        .map(|_| ())
}
