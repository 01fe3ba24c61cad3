//! Every query the analytics endpoints run, beside the tables they read ([`crate`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// The size of a bucket of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    fn unit(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }
}

/// One figure of one bucket: a sum of facts (`messages` by role …), `active_users`, or
/// the response time percentiles `reply_time_p50_ms` and `reply_time_p95_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UsageRow {
    /// The start of the bucket (UTC).
    pub bucket: DateTime<Utc>,
    pub metric: String,
    /// What the metric is broken down by (a role, a document kind, a model), or empty.
    pub dimension: String,
    pub value: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The analytics projector has not made its tables yet.
    #[error("the analytics projection has no live generation yet")]
    NotBuilt,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub struct Usage {
    pool: PgPool,
}

impl Usage {
    pub fn new(pool: PgPool) -> Self {
        Usage { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The tenant's figures in `[from, to)`, by bucket, then metric and dimension.
    pub async fn usage(
        &self,
        tenant: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket: Bucket,
    ) -> Result<Vec<UsageRow>, UsageError> {
        let s = projection::generation::live_schema_in(&self.pool, crate::NAME)
            .await?
            .ok_or(UsageError::NotBuilt)?;
        let b = format!("date_trunc('{}', hour, 'UTC')", bucket.unit());
        let sql = format!(
            "SELECT {b} AS bucket, metric, dimension, sum(value)::float8 AS value
               FROM {s}.usage WHERE tenant_id = $1 AND hour >= $2 AND hour < $3
              GROUP BY 1, 2, 3
             UNION ALL
             SELECT {b}, 'active_users', '', count(DISTINCT user_id)::float8
               FROM {s}.active_users WHERE tenant_id = $1 AND hour >= $2 AND hour < $3
              GROUP BY 1
             UNION ALL
             SELECT {b}, 'reply_time_p50_ms', '', percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)
               FROM {s}.reply_times WHERE tenant_id = $1 AND hour >= $2 AND hour < $3
              GROUP BY 1
             UNION ALL
             SELECT {b}, 'reply_time_p95_ms', '', percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)
               FROM {s}.reply_times WHERE tenant_id = $1 AND hour >= $2 AND hour < $3
              GROUP BY 1
             ORDER BY 1, 2, 3"
        );
        Ok(sqlx::query_as(&sql)
            .bind(tenant)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?)
    }
}
