//! How far a projection's live generation has got with one aggregate: what a reader
//! waits on to read its own write (a version token a command returned).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemas::VersionToken;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};

use crate::deltas::{self, Delta};
use crate::{bookkeeping, generation};

/// Deltas a slow live stream may fall behind by before it misses some.
const DELTAS_BUFFERED: usize = 4_096;

/// The version of the token's aggregate the live generation of `projection` has applied:
/// 0 when it has applied none, or has no generation yet.
pub async fn applied_version(
    pool: &PgPool,
    projection: &str,
    token: &VersionToken,
) -> Result<u64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let Some(schema) = generation::live_schema(&mut conn, projection).await? else {
        return Ok(0);
    };
    let id = token.id.to_string();
    let v = bookkeeping::applied(&mut conn, &schema, (token.kind.as_str(), &id)).await?;
    Ok(v.max(0) as u64)
}

/// How often a waiter woken by announcements still looks by itself: notifications are
/// lost while the listening connection reconnects, and a new generation going live is
/// not announced.
const POLL_ANNOUNCED: Duration = Duration::from_millis(250);

/// How often a waiter without announcements looks.
const POLL: Duration = Duration::from_millis(15);

/// How soon after its last look a waiter woken by an announcement looks again: a
/// projection committing faster does not make each waiter query faster than this.
const LOOK_AGAIN_AFTER: Duration = Duration::from_millis(4);

/// Waits until `projection` has applied the token's version, for at most `max`.
/// `Err(applied)` when it gives up. With `wake` (the projection's
/// [`Announcements::of`]) it looks again at the projection's next commit (at most every
/// [`LOOK_AGAIN_AFTER`]: a projection committing faster does not make its waiters query
/// faster), and every [`POLL_ANNOUNCED`] besides; without, it polls every [`POLL`].
pub async fn wait_for(
    pool: &PgPool,
    projection: &str,
    token: &VersionToken,
    max: Duration,
    mut wake: Option<watch::Receiver<u64>>,
) -> Result<Result<(), u64>, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + max;
    loop {
        // Commits announced from here on wake the wait below, also those that land
        // while the version is being read.
        if let Some(w) = wake.as_mut() {
            w.borrow_and_update();
        }
        let looked = tokio::time::Instant::now();
        let applied = applied_version(pool, projection, token).await?;
        if applied >= token.version.0 {
            return Ok(Ok(()));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Err(applied));
        }
        match wake.as_mut() {
            Some(w) => {
                let until = deadline.min(now + POLL_ANNOUNCED);
                match tokio::time::timeout_at(until, w.changed()).await {
                    Ok(Ok(())) => {
                        tokio::time::sleep_until(deadline.min(looked + LOOK_AGAIN_AFTER)).await
                    }
                    // The listener is gone: poll from now on.
                    Ok(Err(_)) => wake = None,
                    Err(_) => {}
                }
            }
            None => tokio::time::sleep(POLL.min(deadline - now)).await,
        }
    }
}

/// The PostgreSQL notification channel a projection's commits are announced on (the
/// payload is its name).
pub const CHANNEL: &str = "threadline_progress";

/// Commits of every projection as they happen, over one listening connection: a counter
/// per projection that moves at each of its announced commits. Readers that wait for a
/// projection (position waits, live streams) wake on it instead of polling fast. The same
/// connection receives the reply deltas ([`crate::deltas`]) live streams show.
#[derive(Clone, Debug)]
pub struct Announcements {
    counters: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    deltas: broadcast::Sender<Arc<Delta>>,
}

impl Announcements {
    /// Starts listening on `pool`'s database (reconnecting while it cannot) until the
    /// last clone is dropped and a notification arrives.
    pub fn listen(pool: PgPool) -> Announcements {
        let counters = Arc::new(Mutex::new(HashMap::new()));
        let (deltas, _) = broadcast::channel(DELTAS_BUFFERED);
        tokio::spawn(listen(pool, Arc::downgrade(&counters), deltas.clone()));
        Announcements { counters, deltas }
    }

    /// `projection`'s counter.
    pub fn of(&self, projection: &str) -> watch::Receiver<u64> {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counter) = counters.get(projection) {
            return counter.subscribe();
        }
        let (counter, rx) = watch::channel(0);
        counters.insert(projection.to_owned(), counter);
        rx
    }

    /// Every reply delta published from now on, whatever its conversation (a receiver
    /// that falls behind by many misses some: they are a preview).
    pub fn deltas(&self) -> broadcast::Receiver<Arc<Delta>> {
        self.deltas.subscribe()
    }
}

type Counters = Mutex<HashMap<String, watch::Sender<u64>>>;

/// Moves the counter of `projection`, or of every projection (`None`: what happened is
/// unknown). False once nobody holds the [`Announcements`] any more.
fn bump(counters: &std::sync::Weak<Counters>, projection: Option<&str>) -> bool {
    let Some(counters) = counters.upgrade() else {
        return false;
    };
    let counters = counters.lock().unwrap_or_else(|p| p.into_inner());
    for (name, counter) in counters.iter() {
        if projection.is_none_or(|p| p == name) {
            counter.send_modify(|c| *c = c.wrapping_add(1));
        }
    }
    true
}

async fn listen(
    pool: PgPool,
    counters: std::sync::Weak<Counters>,
    deltas: broadcast::Sender<Arc<Delta>>,
) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "progress listener: cannot connect, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all([CHANNEL, deltas::CHANNEL]).await {
            tracing::debug!(error = %e, "progress listener: LISTEN failed, retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            let alive = match listener.try_recv().await {
                Ok(Some(n)) if n.channel() == deltas::CHANNEL => {
                    for delta in deltas::parse(n.payload()) {
                        // Nobody streaming: nothing to do.
                        let _ = deltas.send(Arc::new(delta));
                    }
                    counters.strong_count() > 0
                }
                Ok(Some(n)) => bump(&counters, Some(n.payload())),
                // The connection was lost: what happened meanwhile is unknown, so wake
                // every waiter, then listen again.
                Ok(None) => {
                    if !bump(&counters, None) {
                        return;
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "progress listener failed, reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            };
            if !alive {
                return;
            }
        }
    }
}
