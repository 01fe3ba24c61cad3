//! Audit: event streams replayed from the event store as NDJSON, and the state of an
//! aggregate as of a version or a time.
//!
//! Streams are read page by page in a stable order (an aggregate's by sequence; a
//! tenant's in committed global order), so a long replay holds no transaction open. Each
//! stream ends with a trailer line: `{"end":{...}}` when complete, `{"error":{...}}` when
//! the database failed part-way. A client that sees neither lost the connection.

use std::convert::Infallible;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use domain::state::{
    ConversationState, DocumentState, InboxState, KnowledgeState, WebhookEndpointState,
};
use domain::{Conversation, Document, Inbox, Knowledge, WebhookEndpoint};
use event_store::StoredEvent;
use event_store::log;
use futures::Stream;
use schemas::{AggregateKind, CommitPosition};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

/// One line of an audit stream.
#[derive(Debug, Serialize)]
pub struct AuditEvent<'a> {
    pub event_id: uuid::Uuid,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    /// Committed global order, `<tx_id>.<global_position>`; pass as `after` to resume.
    pub position: String,
    pub recorded_at: DateTime<Utc>,
    pub metadata: &'a std::collections::HashMap<String, String>,
    pub payload: &'a serde_json::Value,
}

fn line(e: &StoredEvent) -> String {
    let view = AuditEvent {
        event_id: e.event_id,
        aggregate_type: &e.aggregate_type,
        aggregate_id: &e.aggregate_id,
        sequence: e.sequence,
        event_type: &e.event_type,
        event_version: &e.event_version,
        position: e.position.to_string(),
        recorded_at: e.recorded_at,
        metadata: &e.metadata,
        payload: &e.payload,
    };
    let mut s = serde_json::to_string(&view).unwrap_or_default();
    s.push('\n');
    s
}

const PAGE: i64 = 500;

/// Filters of a tenant-wide replay.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    pub after: CommitPosition,
    pub store: log::TenantFilter,
}

enum Cursor {
    Tenant(CommitPosition),
    Aggregate(i64),
    Done,
}

struct StreamState {
    pool: PgPool,
    /// A stream ends (with a resumable error line) at this time, however much is left.
    deadline: tokio::time::Instant,
    tenant: String,
    filter: TenantFilter,
    aggregate: Option<(String, String)>,
    cursor: Cursor,
    count: u64,
    last: Option<String>,
}

fn trailer_end(s: &StreamState) -> String {
    format!(
        "{}\n",
        json!({"end": {"count": s.count, "last_position": s.last}})
    )
}

fn trailer_error(s: &StreamState, e: &sqlx::Error) -> String {
    tracing::error!(error = %e, count = s.count, "audit stream interrupted");
    format!(
        "{}\n",
        json!({"error": {"code": "stream_interrupted", "detail": "the event store failed part-way; resume after last_position", "count": s.count, "last_position": s.last}})
    )
}

fn trailer_time_limit(s: &StreamState) -> String {
    format!(
        "{}\n",
        json!({"error": {"code": "stream_time_limit", "detail": "the stream reached its time limit; resume after last_position", "count": s.count, "last_position": s.last}})
    )
}

fn stream(state: StreamState) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::unfold(state, |mut s| async move {
        if !matches!(s.cursor, Cursor::Done) && tokio::time::Instant::now() >= s.deadline {
            s.cursor = Cursor::Done;
            let chunk = trailer_time_limit(&s);
            return Some((Ok(Bytes::from(chunk)), s));
        }
        let page = match s.cursor {
            Cursor::Done => return None,
            Cursor::Tenant(after) => {
                log::tenant_events(&s.pool, &s.tenant, &s.filter.store, after, PAGE).await
            }
            Cursor::Aggregate(after) => {
                let (t, id) = s.aggregate.clone().unwrap_or_default();
                log::aggregate_events(&s.pool, &t, &id, after + 1..=after + PAGE).await
            }
        };
        let chunk = match page {
            Err(e) => {
                s.cursor = Cursor::Done;
                trailer_error(&s, &e)
            }
            Ok(events) if events.is_empty() => {
                s.cursor = Cursor::Done;
                trailer_end(&s)
            }
            Ok(events) => {
                let mut chunk = String::new();
                for e in &events {
                    chunk.push_str(&line(e));
                }
                s.count += events.len() as u64;
                if let Some(last) = events.last() {
                    s.last = Some(last.position.to_string());
                    s.cursor = match s.cursor {
                        Cursor::Tenant(_) => Cursor::Tenant(last.position),
                        _ => Cursor::Aggregate(last.sequence),
                    };
                }
                chunk
            }
        };
        Some((Ok(Bytes::from(chunk)), s))
    })
}

/// The tenant's events in committed global order, for at most `limit`.
pub fn tenant_events(
    pool: PgPool,
    tenant: String,
    filter: TenantFilter,
    limit: std::time::Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let after = filter.after;
    stream(StreamState {
        pool,
        deadline: tokio::time::Instant::now() + limit,
        tenant,
        filter,
        aggregate: None,
        cursor: Cursor::Tenant(after),
        count: 0,
        last: None,
    })
}

/// Whether the aggregate exists and belongs to `tenant` (else the caller answers 404).
pub async fn owned_by(
    pool: &PgPool,
    kind: AggregateKind,
    id: &str,
    tenant: &str,
) -> Result<bool, sqlx::Error> {
    Ok(log::owner(pool, kind.as_str(), id).await?.as_deref() == Some(tenant))
}

/// One aggregate's events by sequence, for at most `limit`. Check [`owned_by`] first.
pub fn aggregate_events(
    pool: PgPool,
    tenant: String,
    kind: AggregateKind,
    id: String,
    limit: std::time::Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    stream(StreamState {
        pool,
        deadline: tokio::time::Instant::now() + limit,
        tenant,
        filter: TenantFilter::default(),
        aggregate: Some((kind.as_str().to_owned(), id)),
        cursor: Cursor::Aggregate(0),
        count: 0,
        last: None,
    })
}

#[derive(Debug, Clone, Copy)]
pub enum AsOf {
    Latest,
    Version(u64),
    Time(DateTime<Utc>),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StateView {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: u64,
    /// When the last folded event was recorded.
    pub as_of: DateTime<Utc>,
    /// The aggregate as the command side folds it, in its public form.
    #[schema(value_type = Object)]
    pub state: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored event does not fit the aggregate: {0}")]
    Corrupt(String),
}

/// Events read per query while folding.
const FOLD_PAGE: i64 = 500;

/// Folds the aggregate's events up to `as_of` with the command side's own aggregate, page
/// by page (memory stays bounded by a page however many events it has), then shows its
/// public state. `None` when no event of the tenant's aggregate is at or before `as_of`.
async fn fold<A, V>(
    pool: &PgPool,
    tenant: &str,
    kind: AggregateKind,
    id: &str,
    as_of: AsOf,
) -> Result<Option<StateView>, StateError>
where
    A: Aggregate,
    V: for<'a> From<&'a A> + Serialize,
{
    let mut aggregate = A::default();
    let mut version = 0u64;
    let mut last_at = None;
    'pages: loop {
        let from = version as i64 + 1;
        let page =
            log::aggregate_events(pool, kind.as_str(), id, from..=from + FOLD_PAGE - 1).await?;
        if page.is_empty() {
            break;
        }
        for e in &page {
            if version == 0 && e.meta("tenant_id") != Some(tenant) {
                return Ok(None);
            }
            let past = match as_of {
                AsOf::Latest => false,
                AsOf::Version(v) => e.sequence as u64 > v,
                // A prefix of the stream: the state as it stood at that time.
                AsOf::Time(t) => e.recorded_at > t,
            };
            if past {
                break 'pages;
            }
            let event: A::Event = serde_json::from_value(e.payload.clone())
                .map_err(|err| StateError::Corrupt(err.to_string()))?;
            aggregate.apply(event);
            version = e.sequence as u64;
            last_at = Some(e.recorded_at);
        }
    }
    if let AsOf::Version(v) = as_of
        && version < v
    {
        return Ok(None);
    }
    let Some(as_of) = last_at else {
        return Ok(None);
    };
    let state = serde_json::to_value(V::from(&aggregate))
        .map_err(|err| StateError::Corrupt(err.to_string()))?;
    Ok(Some(StateView {
        aggregate_type: kind.as_str().to_owned(),
        aggregate_id: id.to_owned(),
        version,
        as_of,
        state,
    }))
}

/// The aggregate folded from its first event up to a version or a time. `None` when no
/// event of the tenant's aggregate is at or before that point.
pub async fn state_at(
    pool: &PgPool,
    tenant: &str,
    kind: AggregateKind,
    id: &str,
    as_of: AsOf,
) -> Result<Option<StateView>, StateError> {
    match kind {
        AggregateKind::Conversation => {
            fold::<Conversation, ConversationState>(pool, tenant, kind, id, as_of).await
        }
        AggregateKind::Document => {
            fold::<Document, DocumentState>(pool, tenant, kind, id, as_of).await
        }
        AggregateKind::Knowledge => {
            fold::<Knowledge, KnowledgeState>(pool, tenant, kind, id, as_of).await
        }
        AggregateKind::WebhookEndpoint => {
            fold::<WebhookEndpoint, WebhookEndpointState>(pool, tenant, kind, id, as_of).await
        }
        AggregateKind::Inbox => fold::<Inbox, InboxState>(pool, tenant, kind, id, as_of).await,
    }
}
