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

/// Prices of models, in USD per million tokens (prompt, completion), from
/// `ANALYTICS_PRICES`: `model=prompt/completion` pairs separated by commas, e.g.
/// `openai/gpt-4o-mini=0.15/0.60,anthropic/claude-3-5-haiku=0.80/4.00`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices(std::collections::BTreeMap<String, (f64, f64)>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "ANALYTICS_PRICES: {0} (expected model=prompt/completion in USD per million tokens, comma-separated)"
)]
pub struct BadPrices(String);

impl Prices {
    pub fn parse(text: &str) -> Result<Self, BadPrices> {
        let mut prices = std::collections::BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (model, pair) = entry
                .rsplit_once('=')
                .ok_or_else(|| BadPrices(format!("{entry:?} has no '='")))?;
            let (p, c) = pair
                .split_once('/')
                .ok_or_else(|| BadPrices(format!("{entry:?} has no '/'")))?;
            let number = |x: &str| {
                x.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| BadPrices(format!("{entry:?}: {x:?} is not a price")))
            };
            prices.insert(model.trim().to_owned(), (number(p)?, number(c)?));
        }
        Ok(Prices(prices))
    }

    /// `estimated_cost_usd` rows (by model) from the token rows of `rows`, for the
    /// models that have a price.
    pub fn costs(&self, rows: &[UsageRow]) -> Vec<UsageRow> {
        let mut cost: std::collections::BTreeMap<(DateTime<Utc>, String), f64> =
            std::collections::BTreeMap::new();
        for r in rows {
            let Some((prompt, completion)) = self.0.get(&r.dimension) else {
                continue;
            };
            let per_million = match r.metric.as_str() {
                "prompt_tokens" => prompt,
                "completion_tokens" => completion,
                _ => continue,
            };
            *cost.entry((r.bucket, r.dimension.clone())).or_default() +=
                r.value * per_million / 1_000_000.0;
        }
        cost.into_iter()
            .map(|((bucket, model), value)| UsageRow {
                bucket,
                metric: "estimated_cost_usd".into(),
                dimension: model,
                value,
            })
            .collect()
    }
}

pub struct Usage {
    pool: PgPool,
    prices: Prices,
}

impl Usage {
    pub fn new(pool: PgPool) -> Self {
        Usage {
            pool,
            prices: Prices::default(),
        }
    }

    /// With prices, answers carry `estimated_cost_usd` by model.
    pub fn with_prices(mut self, prices: Prices) -> Self {
        self.prices = prices;
        self
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
        let mut rows: Vec<UsageRow> = sqlx::query_as(&sql)
            .bind(tenant)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
        let costs = self.prices.costs(&rows);
        rows.extend(costs);
        rows.sort_by(|a, b| {
            (a.bucket, &a.metric, &a.dimension).cmp(&(b.bucket, &b.metric, &b.dimension))
        });
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metric: &str, model: &str, value: f64) -> UsageRow {
        UsageRow {
            bucket: DateTime::<Utc>::UNIX_EPOCH,
            metric: metric.into(),
            dimension: model.into(),
            value,
        }
    }

    #[test]
    fn prices_parse_and_cost_the_tokens_of_priced_models_only() {
        let prices =
            Prices::parse("openai/gpt-x=0.15/0.60, local/extractive-v1=0/0").expect("prices");
        let costs = prices.costs(&[
            row("prompt_tokens", "openai/gpt-x", 2_000_000.0),
            row("completion_tokens", "openai/gpt-x", 1_000_000.0),
            row("prompt_tokens", "anthropic/unpriced", 5.0),
            row("messages", "openai/gpt-x", 3.0),
        ]);
        assert_eq!(costs.len(), 1);
        assert_eq!(costs[0].metric, "estimated_cost_usd");
        assert_eq!(costs[0].dimension, "openai/gpt-x");
        assert!((costs[0].value - 0.90).abs() < 1e-9, "{}", costs[0].value);
        for bad in ["gpt", "gpt=1", "gpt=a/1", "gpt=-1/1", "gpt=1/NaN"] {
            assert!(Prices::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Prices::parse("").expect("empty"), Prices::default());
    }
}
