//! The per-tenant daily LLM token budget kept in PostgreSQL (`llm_token_usage`,
//! migration 4001), so every replica of the assistant spends from the same budget.
//! Refusal is the router's (`llm::router`): it asks what remains before a call and
//! spends what the call used after it.

use chrono::NaiveDate;
use llm::budget::{Allowance, Budget, BudgetError};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

/// The assistant's migrations (versions 4xxx) in the shared database.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

pub struct PgBudget {
    pool: PgPool,
    /// Tokens per tenant per UTC day; `None`: no limit (nothing is counted).
    limit: Option<u64>,
}

impl PgBudget {
    pub fn new(pool: PgPool, limit: Option<u64>) -> Self {
        PgBudget { pool, limit }
    }
}

fn unavailable(e: sqlx::Error) -> BudgetError {
    BudgetError::Unavailable(e.to_string())
}

#[async_trait::async_trait]
impl Budget for PgBudget {
    async fn remaining(
        &self,
        tenant: &str,
        day: NaiveDate,
    ) -> Result<Option<Allowance>, BudgetError> {
        let Some(limit) = self.limit else {
            return Ok(None);
        };
        let spent: Option<i64> = sqlx::query_scalar(
            "SELECT tokens FROM llm_token_usage WHERE tenant_id = $1 AND day = $2",
        )
        .bind(tenant)
        .bind(day)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(Some(Allowance {
            limit,
            spent: spent.unwrap_or(0).max(0) as u64,
        }))
    }

    async fn spend(&self, tenant: &str, day: NaiveDate, tokens: u64) -> Result<(), BudgetError> {
        if self.limit.is_none() || tokens == 0 {
            return Ok(());
        }
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO llm_token_usage (tenant_id, day, tokens) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, day) DO UPDATE
             SET tokens = LEAST(llm_token_usage.tokens + EXCLUDED.tokens, 9223372036854775807)",
        )
        .bind(tenant)
        .bind(day)
        .bind(tokens)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
