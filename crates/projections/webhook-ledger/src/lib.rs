//! The delivery ledger (migrations 5xxx): messages with their schedule, every attempt, and
//! each endpoint's health. The fan-out writes messages, the dispatcher claims and records
//! (both in `webhook-delivery`), query-api reads ([`list_messages`], [`list_attempts`],
//! [`dead_messages`]). The tables live outside projection generations: a rebuild never
//! sends anything again.
//!
//! Architecture invariant: the only code with SQL on these tables; depends on no other
//! crate of ours, so a reader of the ledger links neither the command side nor an HTTP
//! client.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

/// The ledger's migrations (versions 5xxx) in the shared database.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// A message to write: one event for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub message_id: String,
    pub tenant_id: String,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub body: String,
    /// The conversation the event is about, if it is one's (what an erasure reaches).
    pub conversation_id: Option<Uuid>,
}

/// Writes messages (due after `first_delay`); one already written is left as it is, so
/// a redelivered or re-driven event never creates a second message.
pub async fn insert_messages(
    db: &mut PgConnection,
    messages: &[NewMessage],
    first_delay: std::time::Duration,
) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&NewMessage) -> String| messages.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO webhook_messages (message_id, tenant_id, endpoint_id, event_id, event_type, body,
                                       conversation_id, next_attempt_at)
         SELECT m, t, e, v, ty, b, c, now() + make_interval(secs => $7)
         FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $8::uuid[])
              AS x(m, t, e, v, ty, b, c)
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(col(|m| m.message_id.clone()))
    .bind(col(|m| m.tenant_id.clone()))
    .bind(messages.iter().map(|m| m.endpoint_id).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.event_id).collect::<Vec<_>>())
    .bind(col(|m| m.event_type.clone()))
    .bind(col(|m| m.body.clone()))
    .bind(first_delay.as_secs_f64())
    .bind(
        messages
            .iter()
            .map(|m| m.conversation_id)
            .collect::<Vec<_>>(),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// What an erased message's body becomes: its type and that it was erased.
pub const ERASED_BODY: &str = r#"{"erased":true}"#;

/// An erasure (docs/DATA-PROTECTION.md): the messages about `conversations` (every
/// message of the tenant with `whole`) keep their ids, times and outcomes, but not their
/// bodies nor what receivers answered to them; the undelivered ones are dropped. Returns
/// how many messages it erased.
pub async fn erase(
    db: &mut PgConnection,
    tenant_id: &str,
    conversations: &[Uuid],
    whole: bool,
) -> Result<u64, sqlx::Error> {
    // A message from before the column names its conversation only in its body.
    let erased: Vec<String> = sqlx::query_scalar(
        "UPDATE webhook_messages
            SET body = $4,
                status = CASE WHEN status IN ('pending', 'paused') THEN 'dropped' ELSE status END,
                next_attempt_at = CASE WHEN status IN ('pending', 'paused') THEN NULL ELSE next_attempt_at END
          WHERE tenant_id = $1 AND body <> $4
            AND ($2 OR conversation_id = ANY($3)
                 OR (conversation_id IS NULL
                     AND (body::jsonb -> 'data' ->> 'conversation_id') = ANY($3::text[])))
         RETURNING message_id",
    )
    .bind(tenant_id)
    .bind(whole)
    .bind(conversations)
    .bind(ERASED_BODY)
    .fetch_all(&mut *db)
    .await?;
    sqlx::query("UPDATE webhook_attempts SET response = NULL WHERE message_id = ANY($1)")
        .bind(&erased)
        .execute(&mut *db)
        .await?;
    Ok(erased.len() as u64)
}

/// An enabled endpoint's paused messages are due now.
pub async fn resume_endpoint(
    db: impl PgExecutor<'_>,
    endpoint_id: Uuid,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_messages SET status = 'pending', next_attempt_at = now()
         WHERE endpoint_id = $1 AND status = 'paused'",
    )
    .bind(endpoint_id)
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}

/// A deleted endpoint's undelivered messages are dropped.
pub async fn drop_endpoint(db: impl PgExecutor<'_>, endpoint_id: Uuid) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_messages SET status = 'dropped', next_attempt_at = NULL
         WHERE endpoint_id = $1 AND status IN ('pending', 'paused')",
    )
    .bind(endpoint_id)
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}

/// Sends again, from the start of the schedule: one message whatever became of it, or
/// the endpoint's dead messages created in `[since, until)`.
pub async fn redeliver(
    db: impl PgExecutor<'_>,
    endpoint_id: Uuid,
    message_id: Option<&str>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_messages SET status = 'pending', attempts = 0, next_attempt_at = now()
         WHERE endpoint_id = $1 AND status <> 'dropped'
           AND CASE WHEN $2::text IS NOT NULL THEN message_id = $2
                    ELSE status = 'dead' AND created_at >= $3
                         AND ($4::timestamptz IS NULL OR created_at < $4) END",
    )
    .bind(endpoint_id)
    .bind(message_id)
    .bind(since)
    .bind(until)
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}

/// A message claimed for an attempt.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Claimed {
    pub message_id: String,
    pub tenant_id: String,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub body: String,
    /// Failed attempts so far in the current schedule.
    pub attempts: i32,
    pub total_attempts: i32,
}

/// Claims due messages for an attempt: at most `per_endpoint` of each endpoint, none of
/// `busy` endpoints, `limit` in all. A claim moves the message's due time `lease` ahead,
/// so if this process dies mid-attempt the message is tried again after the lease,
/// by any replica; two replicas never claim the same message at once.
///
/// The claim's commit does not wait for its WAL flush (`synchronous_commit = off`): a
/// lease is not worth a disk flush per round. A crash of the database may forget the
/// last claims, and then a message already being sent may be claimed and sent again:
/// receivers de-duplicate by `webhook-id`, as after any expired lease. Outcomes are
/// recorded durably ([`settle`]).
pub async fn claim(
    db: &PgPool,
    busy: &[Uuid],
    per_endpoint: i64,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let claimed = sqlx::query_as(
        // The endpoints with pending messages, one index probe each (a loose scan of
        // webhook_messages_pending_per_endpoint), then each one's due messages, oldest
        // first, from the same index: a claim reads what it takes, not every due row.
        "WITH RECURSIVE endpoints AS (
             (SELECT endpoint_id FROM webhook_messages WHERE status = 'pending'
              ORDER BY endpoint_id LIMIT 1)
             UNION ALL
             SELECT (SELECT m.endpoint_id FROM webhook_messages m
                     WHERE m.status = 'pending' AND m.endpoint_id > e.endpoint_id
                     ORDER BY m.endpoint_id LIMIT 1)
             FROM endpoints e WHERE e.endpoint_id IS NOT NULL
         ), candidates AS (
             SELECT due.message_id FROM endpoints e
             CROSS JOIN LATERAL (
                 SELECT m.message_id, m.next_attempt_at FROM webhook_messages m
                 WHERE m.endpoint_id = e.endpoint_id AND m.status = 'pending'
                   AND m.next_attempt_at <= now()
                 ORDER BY m.next_attempt_at LIMIT $2) due
             WHERE e.endpoint_id IS NOT NULL AND NOT (e.endpoint_id = ANY($1))
             ORDER BY due.next_attempt_at LIMIT $3)
         UPDATE webhook_messages m SET next_attempt_at = now() + make_interval(secs => $4)
         WHERE m.message_id IN (SELECT message_id FROM candidates)
           AND m.status = 'pending' AND m.next_attempt_at <= now()
         RETURNING m.message_id, m.tenant_id, m.endpoint_id, m.event_id, m.event_type, m.body,
                   m.attempts, m.total_attempts",
    )
    .bind(busy)
    .bind(per_endpoint)
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// What one attempt got.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub url: String,
    pub status_code: Option<u16>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub response: Option<String>,
    pub succeeded: bool,
}

/// What becomes of the message after the attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Delivered,
    RetryIn(std::time::Duration),
    Dead,
    /// The endpoint is disabled: the message waits until it is enabled.
    Paused,
    /// The endpoint is gone.
    Dropped,
}

/// An endpoint's attempts in one batch: its last success and its first failure.
#[derive(Debug, Default)]
struct Streak {
    last_success: Option<DateTime<Utc>>,
    first_failure: Option<DateTime<Utc>>,
}

/// One message's outcome: the attempt made (none when the message was only paused or
/// dropped) and what becomes of it.
#[derive(Debug, Clone)]
pub struct Settled {
    pub claimed: Claimed,
    pub attempt: Option<Attempt>,
    pub next: Next,
}

/// Records outcomes together, in one transaction (one commit for many attempts): each
/// attempt, each message's next state, and the health of the endpoints attempted.
/// Returns, per endpoint attempted, since when it has been failing (`None` after a
/// success). A message another process already settled is left alone.
pub async fn settle(
    db: &PgPool,
    outcomes: &[Settled],
) -> Result<HashMap<Uuid, Option<DateTime<Utc>>>, sqlx::Error> {
    let mut tx = db.begin().await?;
    // Per endpoint: the last success and the first failure of this batch.
    let mut health: HashMap<Uuid, Streak> = HashMap::new();
    // Two multi-row statements for the whole batch, whatever its size.
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut statuses = Vec::with_capacity(outcomes.len());
    let mut made = Vec::with_capacity(outcomes.len());
    let mut delays: Vec<Option<f64>> = Vec::with_capacity(outcomes.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
    let mut tried: Vec<(&Claimed, &Attempt)> = Vec::new();
    for Settled {
        claimed,
        attempt,
        next,
    } in outcomes
    {
        let (status, delay, error) = match next {
            Next::Delivered => ("delivered", None, None),
            Next::RetryIn(d) => (
                "pending",
                Some(d.as_secs_f64()),
                attempt.as_ref().and_then(describe),
            ),
            Next::Dead => ("dead", None, attempt.as_ref().and_then(describe)),
            Next::Paused => ("paused", None, None),
            Next::Dropped => ("dropped", None, None),
        };
        ids.push(claimed.message_id.clone());
        statuses.push(status);
        made.push(i32::from(attempt.is_some()));
        delays.push(delay);
        errors.push(error);
        let Some(a) = attempt else { continue };
        tried.push((claimed, a));
        let h = health.entry(claimed.endpoint_id).or_default();
        if a.succeeded {
            h.last_success = h.last_success.max(Some(a.at));
        } else {
            h.first_failure = Some(h.first_failure.map_or(a.at, |t| t.min(a.at)));
        }
    }
    sqlx::query(
        "UPDATE webhook_messages m SET status = x.status, attempts = m.attempts + x.made,
             total_attempts = m.total_attempts + x.made,
             next_attempt_at = CASE WHEN x.delay IS NULL THEN NULL ELSE now() + make_interval(secs => x.delay) END,
             delivered_at = CASE WHEN x.status = 'delivered' THEN now() ELSE m.delivered_at END,
             last_error = COALESCE(x.error, m.last_error)
         FROM unnest($1::text[], $2::text[], $3::int[], $4::float8[], $5::text[]) AS x(id, status, made, delay, error)
         WHERE m.message_id = x.id AND m.status = 'pending'",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&made)
    .bind(&delays)
    .bind(&errors)
    .execute(&mut *tx)
    .await?;
    if !tried.is_empty() {
        let text = |f: fn(&(&Claimed, &Attempt)) -> Option<String>| {
            tried.iter().map(f).collect::<Vec<_>>()
        };
        sqlx::query(
            "INSERT INTO webhook_attempts (message_id, endpoint_id, tenant_id, attempted_at, url, status_code, latency_ms, error, response, succeeded)
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $6::int[], $7::int[], $8::text[], $9::text[], $10::bool[])",
        )
        .bind(text(|(c, _)| Some(c.message_id.clone())))
        .bind(tried.iter().map(|(c, _)| c.endpoint_id).collect::<Vec<_>>())
        .bind(text(|(c, _)| Some(c.tenant_id.clone())))
        .bind(tried.iter().map(|(_, a)| a.at).collect::<Vec<_>>())
        .bind(text(|(_, a)| Some(a.url.clone())))
        .bind(tried.iter().map(|(_, a)| a.status_code.map(i32::from)).collect::<Vec<_>>())
        .bind(tried.iter().map(|(_, a)| a.latency_ms).collect::<Vec<_>>())
        .bind(text(|(_, a)| a.error.clone()))
        .bind(text(|(_, a)| a.response.clone()))
        .bind(tried.iter().map(|(_, a)| a.succeeded).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    let mut failing = HashMap::with_capacity(health.len());
    for (
        endpoint_id,
        Streak {
            last_success: success,
            first_failure: failure,
        },
    ) in health
    {
        // A success in the batch clears the failing streak.
        let since: Option<DateTime<Utc>> = sqlx::query_scalar(
            "INSERT INTO webhook_endpoint_health AS h (endpoint_id, failing_since, last_success_at)
             VALUES ($1, CASE WHEN $2::timestamptz IS NULL THEN $3 END, $2)
             ON CONFLICT (endpoint_id) DO UPDATE SET
                 failing_since = CASE WHEN $2::timestamptz IS NULL THEN COALESCE(h.failing_since, $3) END,
                 last_success_at = COALESCE($2, h.last_success_at)
             RETURNING failing_since",
        )
        .bind(endpoint_id)
        .bind(success)
        .bind(failure)
        .fetch_one(&mut *tx)
        .await?;
        failing.insert(endpoint_id, since);
    }
    tx.commit().await?;
    Ok(failing)
}

/// A failed attempt, in one line for the message's `last_error`.
fn describe(a: &Attempt) -> Option<String> {
    match (&a.error, a.status_code) {
        (Some(e), _) => Some(e.clone()),
        (None, Some(code)) => Some(format!("HTTP {code}")),
        (None, None) => None,
    }
}

/// A message as admins see it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MessageView {
    pub message_id: String,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An endpoint's messages, newest first (`created_at`, then `message_id`, both
/// descending), optionally of one status, up to `limit`, after the message `before` (a
/// page's last) if given.
pub async fn list_messages(
    db: impl PgExecutor<'_>,
    tenant: &str,
    endpoint_id: Uuid,
    status: Option<&str>,
    before: Option<(DateTime<Utc>, &str)>,
    limit: i64,
) -> Result<Vec<MessageView>, sqlx::Error> {
    let (at, id) = before.unzip();
    sqlx::query_as(
        "SELECT message_id, endpoint_id, event_id, event_type, status, total_attempts AS attempts,
                next_attempt_at, delivered_at, last_error, created_at
         FROM webhook_messages
         WHERE tenant_id = $1 AND endpoint_id = $2 AND ($3::text IS NULL OR status = $3)
           AND ($4::timestamptz IS NULL OR (created_at, message_id) < ($4, $5))
         ORDER BY created_at DESC, message_id DESC LIMIT $6",
    )
    .bind(tenant)
    .bind(endpoint_id)
    .bind(status)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// How many of each endpoint's messages are dead now: their schedule ran out and they
/// were not redelivered since. The ledger is where a message's state lives; endpoints
/// without dead messages are absent.
pub async fn dead_messages(
    db: impl PgExecutor<'_>,
    tenant: &str,
    endpoints: &[Uuid],
) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT endpoint_id, count(*) FROM webhook_messages
         WHERE tenant_id = $1 AND endpoint_id = ANY($2) AND status = 'dead'
         GROUP BY endpoint_id",
    )
    .bind(tenant)
    .bind(endpoints)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// One attempt as admins see it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AttemptView {
    /// Increases with every attempt made; a page's cursor names the last one.
    pub attempt_id: i64,
    pub message_id: String,
    pub attempted_at: DateTime<Utc>,
    pub url: String,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub response: Option<String>,
    pub succeeded: bool,
}

/// An endpoint's attempts (or one message's), newest first (`attempted_at`, then
/// `attempt_id`, both descending), up to `limit`, after the attempt `before` (a page's
/// last) if given.
pub async fn list_attempts(
    db: impl PgExecutor<'_>,
    tenant: &str,
    endpoint_id: Uuid,
    message_id: Option<&str>,
    before: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<AttemptView>, sqlx::Error> {
    let (at, id) = before.unzip();
    sqlx::query_as(
        "SELECT attempt_id, message_id, attempted_at, url, status_code, latency_ms, error,
                response, succeeded
         FROM webhook_attempts
         WHERE tenant_id = $1 AND endpoint_id = $2 AND ($3::text IS NULL OR message_id = $3)
           AND ($4::timestamptz IS NULL OR (attempted_at, attempt_id) < ($4, $5))
         ORDER BY attempted_at DESC, attempt_id DESC LIMIT $6",
    )
    .bind(tenant)
    .bind(endpoint_id)
    .bind(message_id)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await
}
