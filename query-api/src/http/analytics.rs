//! `GET /v1/analytics/usage`: a tenant's usage figures by hour or day, from the analytics
//! projection, as JSON or CSV (`Accept: text/csv`). Admins only.

use analytics::queries::UsageError;
use analytics::{Bucket, UsageRow};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use platform::auth::{Principal, Role};
use platform::problem::{Problem, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::reads::{Consistency, consistent, consistent_in};
use super::{AppState, checked_time, database_failed, read_failed};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// Start (RFC 3339, inclusive); default `to` minus 7 days.
    pub from: Option<DateTime<Utc>>,
    /// End (exclusive); default now.
    pub to: Option<DateTime<Utc>>,
    /// `hour` (at most 31 days) or `day` (default; at most 366 days).
    #[param(pattern = "^(hour|day)$")]
    pub bucket: Option<String>,
    /// `dimension` (default: each metric broken down by role, kind, model …) or
    /// `metric` (each metric's total; percentiles are left as they are).
    #[param(pattern = "^(dimension|metric)$")]
    pub group_by: Option<String>,
    /// A `position` a command returned: waits until the analytics have it.
    #[param(
        pattern = r"^(conversation|document|knowledge|webhook_endpoint|inbox):[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:[0-9]{1,19}$"
    )]
    pub position: Option<String>,
    #[param(minimum = 0)]
    pub wait_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// `hour` or `day`.
    pub bucket: String,
    pub items: Vec<UsageRow>,
}

fn bad(detail: impl Into<String>) -> Problem {
    Problem::bad_request("invalid_query", detail)
}

/// The tenant's usage figures (see the analytics crate for the metrics).
#[utoipa::path(get, path = "/v1/analytics/usage", params(UsageParams),
    responses((status = 200, body = UsageReport, description = "JSON, or CSV with Accept: text/csv"),
              (status = 400), (status = 401), (status = 403), (status = 503)),
    security(("bearer" = [])))]
pub async fn usage(
    State(app): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Query(p): Query<UsageParams>,
) -> Result<Response, Problem> {
    who.require_any(&[Role::Admin])?;
    let (bucket, name, longest) = match p.bucket.as_deref().unwrap_or("day") {
        "hour" => (Bucket::Hour, "hour", TimeDelta::days(31)),
        "day" => (Bucket::Day, "day", TimeDelta::days(366)),
        _ => return Err(bad("bucket must be hour or day")),
    };
    let by_metric = match p.group_by.as_deref().unwrap_or("dimension") {
        "dimension" => false,
        "metric" => true,
        _ => return Err(bad("group_by must be dimension or metric")),
    };
    let to = checked_time("to", p.to)?.unwrap_or_else(Utc::now);
    let from = checked_time("from", p.from)?.unwrap_or(to - TimeDelta::days(7));
    // Each parameter is well formed here; together they may still ask for too much.
    let range = |detail: String| Problem::bad_request("invalid_range", detail);
    if from >= to {
        return Err(range("from must be before to".into()));
    }
    if to - from > longest {
        return Err(range(format!(
            "at most {} days by {name}",
            longest.num_days()
        )));
    }
    let position = Consistency {
        position: p.position,
        wait_ms: p.wait_ms,
    };
    consistent_in(&app, analytics::NAME, &position, &who).await?;
    let items = app
        .analytics
        .usage(&who.tenant_id, from, to, bucket)
        .await
        .map_err(|e| match e {
            UsageError::NotBuilt => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "analytics_unavailable",
                "Analytics unavailable",
            )
            .detail("the analytics projector has not built its tables yet")
            .retry_after(5),
            UsageError::Database(e) => database_failed(&e),
        })?;
    let items = if by_metric { totals(items) } else { items };
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    if wants_csv {
        let mut csv = String::from("bucket,metric,dimension,value\n");
        for r in &items {
            csv.push_str(&format!(
                "{},{},{},{}\n",
                r.bucket.to_rfc3339(),
                r.metric,
                csv_field(&r.dimension),
                r.value
            ));
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response());
    }
    Ok(axum::Json(UsageReport {
        from,
        to,
        bucket: name.to_owned(),
        items,
    })
    .into_response())
}

/// What one conversation amounted to (messages by role, replies and failures, tokens,
/// response times p50/p95, documents), from the read model. Admins only.
#[utoipa::path(get, path = "/v1/analytics/conversations/{id}",
    params(("id" = uuid::Uuid, Path), Consistency),
    responses((status = 200, body = read_model::queries::ConversationSummary),
              (status = 401), (status = 403), (status = 404), (status = 503)),
    security(("bearer" = [])))]
pub async fn conversation(
    State(app): State<AppState>,
    who: Principal,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(position): Query<Consistency>,
) -> Result<axum::Json<read_model::queries::ConversationSummary>, Problem> {
    who.require_any(&[Role::Admin])?;
    let id: uuid::Uuid = id.parse().map_err(|_| Problem::not_found())?;
    consistent(&app, &position, &who).await?;
    app.reads
        .conversation_summary(&who.scope(), id)
        .await
        .map_err(read_failed)?
        .map(axum::Json)
        .ok_or_else(Problem::not_found)
}

/// Each metric's total per bucket, over its dimensions (response time percentiles have
/// none, and are kept).
fn totals(items: Vec<UsageRow>) -> Vec<UsageRow> {
    let mut out: Vec<UsageRow> = Vec::new();
    for mut r in items {
        if let Some(last) = out.last_mut()
            && last.bucket == r.bucket
            && last.metric == r.metric
        {
            last.value += r.value;
            continue;
        }
        r.dimension.clear();
        out.push(r);
    }
    out
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("openai/gpt-4o"), "openai/gpt-4o");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
