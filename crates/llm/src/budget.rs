//! The per-tenant daily token budget: how many tokens (prompt and completion) a tenant
//! may spend per UTC day. The router asks [`Budget::remaining`] before calling any
//! provider and refuses once nothing remains; it [`Budget::spend`]s a completion's usage
//! after it. A request is let through while anything remains, so the last one of a day
//! may overshoot by its own size. [`InMemoryBudget`] keeps the counts in this process;
//! a shared store implements the same trait.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, Utc};
use thiserror::Error;

/// A tenant's limit for a day and what it has spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub limit: u64,
    pub spent: u64,
}

impl Allowance {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.spent)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BudgetError {
    /// The store of spent tokens cannot be read or written now.
    #[error("the token budget store is unavailable: {0}")]
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait Budget: Send + Sync {
    /// The tenant's allowance for `day`, or `None` when it has no limit.
    async fn remaining(
        &self,
        tenant: &str,
        day: NaiveDate,
    ) -> Result<Option<Allowance>, BudgetError>;

    /// Adds `tokens` to what the tenant spent on `day`.
    async fn spend(&self, tenant: &str, day: NaiveDate, tokens: u64) -> Result<(), BudgetError>;
}

/// When a day's budget starts again: the next midnight, UTC.
pub fn resets_at(day: NaiveDate) -> DateTime<Utc> {
    day.succ_opt()
        .unwrap_or(day)
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
}

/// The same daily limit for every tenant (`None`: unlimited), counted in memory. Counts
/// of past days are forgotten as days pass.
#[derive(Debug, Default)]
pub struct InMemoryBudget {
    limit: Option<u64>,
    spent: Mutex<HashMap<String, (NaiveDate, u64)>>,
}

impl InMemoryBudget {
    pub fn new(daily_limit: Option<u64>) -> Self {
        InMemoryBudget {
            limit: daily_limit,
            spent: Mutex::new(HashMap::new()),
        }
    }

    fn spent(&self) -> std::sync::MutexGuard<'_, HashMap<String, (NaiveDate, u64)>> {
        self.spent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Budget for InMemoryBudget {
    async fn remaining(
        &self,
        tenant: &str,
        day: NaiveDate,
    ) -> Result<Option<Allowance>, BudgetError> {
        let Some(limit) = self.limit else {
            return Ok(None);
        };
        let spent = match self.spent().get(tenant) {
            Some((d, n)) if *d == day => *n,
            _ => 0,
        };
        Ok(Some(Allowance { limit, spent }))
    }

    async fn spend(&self, tenant: &str, day: NaiveDate, tokens: u64) -> Result<(), BudgetError> {
        if self.limit.is_none() {
            return Ok(());
        }
        let mut spent = self.spent();
        let entry = spent.entry(tenant.to_owned()).or_insert((day, 0));
        if entry.0 < day {
            *entry = (day, 0);
        }
        if entry.0 == day {
            entry.1 = entry.1.saturating_add(tokens);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spending_counts_per_tenant_and_day() {
        let budget = InMemoryBudget::new(Some(100));
        let d1 = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let d2 = d1.succ_opt().unwrap();
        budget.spend("t1", d1, 60).await.unwrap();
        budget.spend("t1", d1, 50).await.unwrap();
        let a = budget.remaining("t1", d1).await.unwrap().unwrap();
        assert_eq!((a.limit, a.spent, a.remaining()), (100, 110, 0));
        assert_eq!(budget.remaining("t2", d1).await.unwrap().unwrap().spent, 0);
        assert_eq!(budget.remaining("t1", d2).await.unwrap().unwrap().spent, 0);
        budget.spend("t1", d2, 5).await.unwrap();
        assert_eq!(budget.remaining("t1", d2).await.unwrap().unwrap().spent, 5);
        assert_eq!(resets_at(d1).to_rfc3339(), "2026-03-02T00:00:00+00:00");
        let unlimited = InMemoryBudget::new(None);
        unlimited.spend("t1", d1, 1_000_000).await.unwrap();
        assert_eq!(unlimited.remaining("t1", d1).await.unwrap(), None);
    }
}
