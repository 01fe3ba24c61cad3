//! Retention (docs/DATA-PROTECTION.md, "Retention and export"): a tenant's policy
//! ("conversations ended more than N days ago are erased") and its application. Applying
//! it erases each conversation past the limit through [`CommandService::erase`], so every
//! erasure is a `SubjectErased` event like an admin's (its actor [`ACTOR`], its reason
//! naming the policy) and the projections remove their copies as for any other. The
//! clock is the caller's: `apply` takes `now`.

use chrono::{DateTime, Utc};
use schemas::Subject;
use sqlx::PgPool;
use uuid::Uuid;

use event_store::Reader;

use crate::{CommandError, CommandService, Reach, RequestMeta, db, protect_error};

/// Who erases on a policy's behalf, in the events it records.
pub const ACTOR: &str = "retention";

/// The longest a policy keeps conversations: a hundred years.
pub const DAYS_MAX: u32 = 36_500;

/// A tenant's policy and what applying it has done.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Policy {
    pub conversations_ended_days: u32,
    pub set_by: String,
    pub set_at: DateTime<Utc>,
    pub last_applied_at: Option<DateTime<Utc>>,
    /// Conversations erased by the policy so far.
    pub erased_total: i64,
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    tenant_id: String,
    conversations_ended_days: i32,
    set_by: String,
    set_at: DateTime<Utc>,
    last_applied_at: Option<DateTime<Utc>>,
    erased_total: i64,
}

impl From<PolicyRow> for Policy {
    fn from(r: PolicyRow) -> Self {
        Policy {
            conversations_ended_days: u32::try_from(r.conversations_ended_days).unwrap_or(0),
            set_by: r.set_by,
            set_at: r.set_at,
            last_applied_at: r.last_applied_at,
            erased_total: r.erased_total,
        }
    }
}

/// What one application did, per tenant.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Applied {
    pub tenant_id: String,
    pub erased: Vec<Uuid>,
}

/// The tenant's policy, if it has one (who set it by their id, read through `store`).
pub async fn policy(store: &Reader, tenant: &str) -> Result<Option<Policy>, CommandError> {
    let row: Option<PolicyRow> = sqlx::query_as(
        "SELECT tenant_id, conversations_ended_days, set_by, set_at, last_applied_at, erased_total
           FROM retention_policies WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(store.pool())
    .await
    .map_err(db)?;
    let Some(mut policy) = row.map(Policy::from) else {
        return Ok(None);
    };
    policy.set_by = store
        .actor(tenant, &policy.set_by)
        .await
        .map_err(protect_error)?;
    Ok(Some(policy))
}

impl CommandService {
    /// Sets the caller's tenant's policy (`None`: keep conversations for ever). Needs data
    /// protection, as erasure does; only a caller who reaches the whole tenant sets it.
    pub async fn set_retention(
        &self,
        days: Option<u32>,
        meta: &RequestMeta,
    ) -> Result<Option<Policy>, CommandError> {
        if self.reader().protector().is_none() {
            return Err(CommandError::DataProtectionOff);
        }
        if meta.reach != Reach::Tenant {
            return Err(domain::DomainError::NotFound.into());
        }
        let pool = self.reader().pool();
        let Some(days) = days else {
            sqlx::query("DELETE FROM retention_policies WHERE tenant_id = $1")
                .bind(&meta.tenant_id)
                .execute(pool)
                .await
                .map_err(db)?;
            tracing::info!(tenant_id = %meta.tenant_id, set_by = %meta.user_id, "retention policy removed");
            return Ok(None);
        };
        if days == 0 || days > DAYS_MAX {
            return Err(domain::DomainError::Invalid {
                field: "conversations_ended_days",
                reason: format!("is {days}; 1 to {DAYS_MAX} days, or null to keep for ever"),
            }
            .into());
        }
        sqlx::query(
            "INSERT INTO retention_policies (tenant_id, conversations_ended_days, set_by)
             VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE
                SET conversations_ended_days = EXCLUDED.conversations_ended_days,
                    set_by = EXCLUDED.set_by, set_at = now()",
        )
        .bind(&meta.tenant_id)
        .bind(days as i32)
        .bind(self.stored_actor(meta).await?)
        .execute(pool)
        .await
        .map_err(db)?;
        tracing::info!(tenant_id = %meta.tenant_id, days, set_by = %meta.user_id, "retention policy set");
        policy(self.reader(), &meta.tenant_id).await
    }

    /// Applies every tenant's policy as of `now`: each conversation that ended more than
    /// its days before `now` and is not erased yet is erased. Returns what it erased, per
    /// tenant. Replicas may apply at once: an erasure is idempotent, and one already done
    /// is not found again.
    pub async fn apply_retention(&self, now: DateTime<Utc>) -> Result<Vec<Applied>, CommandError> {
        let pool = self.reader().pool();
        let policies: Vec<PolicyRow> = sqlx::query_as(
            "SELECT tenant_id, conversations_ended_days, set_by, set_at, last_applied_at, erased_total
               FROM retention_policies ORDER BY tenant_id",
        )
        .fetch_all(pool)
        .await
        .map_err(db)?;
        let mut report = Vec::with_capacity(policies.len());
        for p in policies {
            let cutoff = now - chrono::Duration::days(i64::from(p.conversations_ended_days));
            let due = due(pool, &p.tenant_id, cutoff).await?;
            let meta = RequestMeta {
                tenant_id: p.tenant_id.clone(),
                user_id: ACTOR.to_owned(),
                reach: Reach::Tenant,
                correlation_id: Uuid::now_v7().to_string(),
                causation_id: format!("retention:{}", p.tenant_id),
                traceparent: None,
                tracestate: None,
                idempotency: None,
            };
            let reason = format!(
                "retention: ended more than {} days ago",
                p.conversations_ended_days
            );
            let mut erased = Vec::new();
            for id in due {
                self.erase(Subject::Conversation(id), reason.clone(), &meta)
                    .await?;
                erased.push(id);
            }
            sqlx::query(
                "UPDATE retention_policies
                    SET last_applied_at = $2, erased_total = erased_total + $3
                  WHERE tenant_id = $1",
            )
            .bind(&p.tenant_id)
            .bind(now)
            .bind(erased.len() as i64)
            .execute(pool)
            .await
            .map_err(db)?;
            if !erased.is_empty() {
                tracing::info!(tenant_id = %p.tenant_id, erased = erased.len(), "retention applied");
            }
            report.push(Applied {
                tenant_id: p.tenant_id,
                erased,
            });
        }
        Ok(report)
    }
}

/// The tenant's conversations that ended before `cutoff` and still have a key to erase
/// (one erased is not due again unless new data gave it a new key; one stored before
/// data protection was on has none, and is not erased by key: docs/DATA-PROTECTION.md,
/// "Open").
async fn due(
    pool: &PgPool,
    tenant: &str,
    cutoff: DateTime<Utc>,
) -> Result<Vec<Uuid>, CommandError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT e.aggregate_id FROM events e
          WHERE e.tenant_id = $1 AND e.recorded_at < $2 + interval '1 minute'
            AND e.aggregate_type = 'conversation' AND e.event_type = 'ConversationEnded'
            AND (e.payload -> 'ConversationEnded' ->> 'ended_at')::bigint < $3
            AND EXISTS (
                SELECT 1 FROM subject_keys k
                 WHERE k.tenant_id = $1 AND k.subject = 'conversation:' || e.aggregate_id
                   AND k.sealed_key IS NOT NULL)
          ORDER BY e.recorded_at",
    )
    .bind(tenant)
    .bind(cutoff)
    .bind(cutoff.timestamp_millis())
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
}

/// Applies the policies every `every` until `stop` says so (command-api runs it).
pub async fn keep(
    service: std::sync::Arc<CommandService>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = service.apply_retention(Utc::now()).await {
            tracing::warn!(error = %e, "applying the retention policies failed; next round");
        }
    }
}
