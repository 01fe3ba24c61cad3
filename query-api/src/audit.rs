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
    ConversationState, DocumentState, InboxState, KnowledgeState, SubjectState,
    WebhookEndpointState,
};
use domain::{Conversation, Document, Inbox, Knowledge, SubjectRecord, WebhookEndpoint};
use event_store::chain;
use event_store::keys::KeyError;
use event_store::log::{self, RawEvent, RawPage};
use event_store::protect::{EventAt, Opened, ProtectError};
use event_store::{Reader, StreamError};
use futures::Stream;
use schemas::personal::Pseudonym;
use schemas::{AggregateKind, CommitPosition};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

/// The fields of an audit line before its metadata and payload.
#[derive(Debug, Serialize)]
struct Head<'a> {
    event_id: uuid::Uuid,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    sequence: i64,
    event_type: &'a str,
    event_version: &'a str,
    /// Committed global order, `<tx_id>.<global_position>`; pass as `after` to resume.
    #[serde(serialize_with = "as_text")]
    position: CommitPosition,
    recorded_at: DateTime<Utc>,
}

/// A position in its one text form (`CommitPosition`'s `Display`).
fn as_text<S: serde::Serializer>(position: &CommitPosition, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(position)
}

/// Appends one line of an audit stream: the event's fields, then `metadata` and `payload`
/// as the JSON text the store keeps (valid JSON objects, written as they are rather than
/// parsed and written again), then a newline.
fn push_line(out: &mut Vec<u8>, e: &RawEvent<'_>, metadata: &str, payload: &str) {
    let head = Head {
        event_id: e.event_id,
        aggregate_type: e.aggregate_type,
        aggregate_id: e.aggregate_id,
        sequence: e.sequence,
        event_type: e.event_type,
        event_version: e.event_version,
        position: e.position,
        recorded_at: e.recorded_at,
    };
    let start = out.len();
    if serde_json::to_writer(&mut *out, &head).is_err() || out.pop() != Some(b'}') {
        // Serialising strings, numbers and a time into a Vec cannot fail; should it ever,
        // the line is left out rather than written broken.
        out.truncate(start);
        return;
    }
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(metadata.as_bytes());
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload.as_bytes());
    out.extend_from_slice(b"}\n");
}

/// Events per page of a tenant-wide replay, and of an aggregate's.
pub const PAGE: i64 = 2_000;

/// Filters of a tenant-wide replay.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    pub after: CommitPosition,
    pub store: log::TenantFilter,
}

type Pages = tokio::sync::mpsc::Receiver<Result<RawPage, sqlx::Error>>;

struct StreamState {
    /// Opens sealed personal fields (the line shows them in clear, or as erased).
    events: Reader,
    /// Read one page ahead of what is being sent.
    pages: Pages,
    /// A stream ends (with a resumable error line) at this time, however much is left.
    deadline: tokio::time::Instant,
    done: bool,
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

fn stream(
    pages: Pages,
    limit: std::time::Duration,
    events: Reader,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let state = StreamState {
        events,
        pages,
        deadline: tokio::time::Instant::now() + limit,
        done: false,
        count: 0,
        last: None,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        if tokio::time::Instant::now() >= s.deadline {
            s.done = true;
            let chunk = trailer_time_limit(&s);
            return Some((Ok(Bytes::from(chunk)), s));
        }
        let chunk = match s.pages.recv().await {
            Some(Err(e)) => {
                s.done = true;
                Bytes::from(trailer_error(&s, &e))
            }
            None => {
                s.done = true;
                Bytes::from(trailer_end(&s))
            }
            Some(Ok(page)) => match lines(&page, &s.events).await {
                Ok((chunk, last)) => {
                    s.count += page.len() as u64;
                    if let Some(last) = last {
                        s.last = Some(last.to_string());
                    }
                    Bytes::from(chunk)
                }
                Err(e) => {
                    s.done = true;
                    Bytes::from(trailer_error(&s, &e))
                }
            },
        };
        Some((Ok(chunk), s))
    })
}

/// A page's lines, and the position of its last event. A row that does not decode
/// fails the page (nothing of it is sent), so `count` and `last_position` stay exact.
async fn lines(
    page: &RawPage,
    events: &Reader,
) -> Result<(Vec<u8>, Option<CommitPosition>), sqlx::Error> {
    let mut chunk = Vec::with_capacity(page.len() * 512);
    let mut last = None;
    for e in page.events() {
        let e = e?;
        // Only a payload that may hold a sealed box or a pseudonym is parsed, and only
        // metadata that names a pseudonym is rewritten; the rest is spliced in as stored.
        let open_payload =
            e.payload.contains("\"sealed\":") || e.payload.contains(Pseudonym::PREFIX);
        let name_caller = e.metadata.contains(Pseudonym::PREFIX);
        let (mut opened, mut named) = (None, None);
        if open_payload || name_caller {
            let tenant = tenant_of(e.metadata);
            if open_payload {
                opened = opened_text(events, &e, &tenant).await?;
            }
            if name_caller {
                named = named_metadata(events, &e, &tenant).await?;
            }
        }
        push_line(
            &mut chunk,
            &e,
            named.as_deref().unwrap_or(e.metadata),
            opened.as_deref().unwrap_or(e.payload),
        );
        last = Some(e.position);
    }
    Ok((chunk, last))
}

/// The tenant an event's stored metadata names (empty when it names none), read without
/// parsing the rest of it.
fn tenant_of(metadata: &str) -> std::borrow::Cow<'_, str> {
    #[derive(serde::Deserialize)]
    struct Tenant<'a> {
        #[serde(borrow)]
        tenant_id: std::borrow::Cow<'a, str>,
    }
    serde_json::from_str::<Tenant>(metadata)
        .map(|t| t.tenant_id)
        .unwrap_or_default()
}

/// A failure to open or resolve what `e` stores: the database's is the stream's; any
/// other leaves the line as stored, and is logged.
fn unopened(e: &RawEvent<'_>, error: ProtectError) -> Result<Option<String>, sqlx::Error> {
    match error {
        ProtectError::Keys(KeyError::Database(db)) => Err(db),
        other => {
            tracing::error!(event_id = %e.event_id, error = %other, "a stored event does not open");
            Ok(None)
        }
    }
}

/// The payload of `e` with its sealed personal fields opened (or erased) and the people
/// it names by pseudonyms resolved, as JSON text; `None` when nothing was stored
/// otherwise, or it does not open (the line then shows what is stored).
async fn opened_text(
    events: &Reader,
    e: &RawEvent<'_>,
    tenant: &str,
) -> Result<Option<String>, sqlx::Error> {
    let Ok(mut payload) = serde_json::from_str::<serde_json::Value>(e.payload) else {
        return Ok(None);
    };
    let at = EventAt {
        tenant,
        aggregate_type: e.aggregate_type,
        aggregate_id: e.aggregate_id,
        sequence: e.sequence,
        event_type: e.event_type,
    };
    match events.open(&at, &mut payload).await {
        Ok(Opened::Plain) => Ok(None),
        Ok(_) => Ok(Some(payload.to_string())),
        Err(error) => unopened(e, error),
    }
}

/// The stored metadata of `e` with the pseudonym of its `user_id` replaced by who it
/// names (`[erased]` once they are erased); `None` when it names none.
async fn named_metadata(
    events: &Reader,
    e: &RawEvent<'_>,
    tenant: &str,
) -> Result<Option<String>, sqlx::Error> {
    let metadata = e.metadata;
    let Some(at) = metadata
        .find(Pseudonym::PREFIX)
        .filter(|_| !tenant.is_empty())
    else {
        return Ok(None);
    };
    // A pseudonym's text is its prefix and a hyphenated UUID: nothing to escape.
    let end = (at + Pseudonym::PREFIX.len() + 36).min(metadata.len());
    let Some(pseudonym) = metadata
        .get(at..end)
        .filter(|p| Pseudonym::parse(p).is_some())
    else {
        return Ok(None);
    };
    match events.actor(tenant, pseudonym).await {
        Ok(actor) => {
            let quoted = serde_json::Value::String(actor).to_string();
            Ok(Some(metadata.replace(&format!("\"{pseudonym}\""), &quoted)))
        }
        Err(error) => unopened(e, error),
    }
}

/// A page and the cursor after it (from its last event); `None` when the page is empty.
fn page_and_next<C>(
    page: RawPage,
    next: impl Fn(&RawEvent<'_>) -> C,
) -> Result<Option<(RawPage, C)>, sqlx::Error> {
    let after = match page.events().next_back() {
        None => return Ok(None),
        Some(last) => next(&last?),
    };
    Ok(Some((page, after)))
}

/// The tenant's events in committed global order, for at most `limit`.
pub fn tenant_events(
    events: Reader,
    tenant: String,
    filter: TenantFilter,
    limit: std::time::Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let pool = events.pool().clone();
    let pages = log::read_ahead(filter.after, move |after| {
        let (pool, tenant, store) = (pool.clone(), tenant.clone(), filter.store.clone());
        async move {
            let page = log::tenant_events(&pool, &tenant, &store, after, PAGE).await?;
            page_and_next(page, |last| last.position)
        }
    });
    stream(pages, limit, events)
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
    events: Reader,
    kind: AggregateKind,
    id: String,
    limit: std::time::Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    aggregates_events(events, vec![(kind, id)], limit)
}

/// The events of several aggregates, each by sequence and one after the other, as one
/// stream with one trailer (a subject's export), for at most `limit`. The caller checks
/// that each is the tenant's.
pub fn aggregates_events(
    events: Reader,
    aggregates: Vec<(AggregateKind, String)>,
    limit: std::time::Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let pool = events.pool().clone();
    let aggregates = std::sync::Arc::new(aggregates);
    let pages = log::read_ahead((0usize, 0i64), move |(mut i, mut after)| {
        let (pool, aggregates) = (pool.clone(), aggregates.clone());
        async move {
            while let Some((kind, id)) = aggregates.get(i) {
                let page =
                    log::aggregate_events_raw(&pool, kind.as_str(), id, after + 1..=after + PAGE)
                        .await?;
                if let Some(next) = page_and_next(page, |last| (i, last.sequence))? {
                    return Ok(Some(next));
                }
                (i, after) = (i + 1, 0);
            }
            Ok(None)
        }
    });
    stream(pages, limit, events)
}

/// Links recomputed per page of a chain verification.
pub const VERIFY_PAGE: i64 = 5_000;

struct Verifying {
    pool: PgPool,
    page: i64,
    tenant: String,
    through: i64,
    checked: u64,
    heads_matched: u64,
    deadline: tokio::time::Instant,
    done: bool,
}

fn line(value: serde_json::Value) -> Bytes {
    let mut out = value.to_string().into_bytes();
    out.push(b'\n');
    Bytes::from(out)
}

/// Verifies `tenant`'s audit chain after link `after` (0: from its start), `page` links
/// at a time ([`VERIFY_PAGE`]), for at most `limit`: NDJSON, a `{"progress":…}` line per
/// page, then `{"end":…}` (every link
/// holds: the last one and the heads it matched), `{"broken":…}` (the first link that
/// does not hold, and why), or `{"error":…}` with `through`, where a new call resumes
/// (`after=through`).
pub fn verify_chain(
    pool: PgPool,
    tenant: String,
    after: i64,
    page: i64,
    limit: std::time::Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let state = Verifying {
        pool,
        page,
        tenant,
        through: after,
        checked: 0,
        heads_matched: 0,
        deadline: tokio::time::Instant::now() + limit,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        if tokio::time::Instant::now() >= s.deadline {
            s.done = true;
            let chunk = line(
                json!({"error": {"code": "stream_time_limit", "detail": "the verification reached its time limit; resume with after=through", "checked": s.checked, "through": s.through}}),
            );
            return Some((Ok(chunk), s));
        }
        let chunk = match chain::verify(&s.pool, &s.tenant, s.through, s.page).await {
            Err(e) => {
                tracing::error!(error = %e, through = s.through, "chain verification interrupted");
                s.done = true;
                line(
                    json!({"error": {"code": "stream_interrupted", "detail": "the event store failed part-way; resume with after=through", "checked": s.checked, "through": s.through}}),
                )
            }
            Ok(found) => {
                s.checked += found.checked;
                s.heads_matched += found.heads_matched;
                s.through = found.through;
                if let Some(broken) = found.broken {
                    s.done = true;
                    let (aggregate_type, aggregate_id, sequence) = broken
                        .aggregate
                        .map_or((None, None, None), |(t, i, n)| (Some(t), Some(i), Some(n)));
                    line(json!({"broken": {
                        "n": broken.n,
                        "reason": broken.kind.as_str(),
                        "event_id": broken.event_id,
                        "aggregate_type": aggregate_type,
                        "aggregate_id": aggregate_id,
                        "sequence": sequence,
                        "checked": s.checked,
                        "through": s.through,
                    }}))
                } else if found.more {
                    line(json!({"progress": {"checked": s.checked, "through": s.through}}))
                } else {
                    s.done = true;
                    line(json!({"end": {
                        "verified": true,
                        "checked": s.checked,
                        "through": s.through,
                        "link": hex::encode(found.link),
                        "heads_matched": s.heads_matched,
                    }}))
                }
            }
        };
        Some((Ok(chunk), s))
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

impl From<StreamError> for StateError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Database(e) => StateError::Database(e),
            corrupt => StateError::Corrupt(corrupt.to_string()),
        }
    }
}

/// Folds the aggregate's events up to `as_of` with the command side's own aggregate, page
/// by page (memory stays bounded by a page however many events it has), then shows its
/// public state. `None` when no event of the tenant's aggregate is at or before `as_of`.
async fn fold<A, V>(
    pool: &event_store::Reader,
    tenant: &str,
    kind: AggregateKind,
    id: &str,
    as_of: AsOf,
) -> Result<Option<StateView>, StateError>
where
    A: Aggregate,
    V: for<'a> From<&'a A> + Serialize,
{
    // An id that is no UUID names no aggregate.
    let Ok(uuid) = id.parse::<uuid::Uuid>() else {
        return Ok(None);
    };
    let mut aggregate = A::default();
    let mut version = 0u64;
    let mut last_at = None;
    let mut stream = event_store::Stream::new(pool, kind, uuid).of_tenant(tenant);
    'pages: while let Some(page) = stream.next_page().await? {
        for e in page {
            let past = match as_of {
                AsOf::Latest => false,
                AsOf::Version(v) => e.sequence() as u64 > v,
                // A prefix of the stream: the state as it stood at that time.
                AsOf::Time(t) => e.headers.recorded_at > t,
            };
            if past {
                break 'pages;
            }
            aggregate.apply(e.decode::<A::Event>()?);
            version = e.sequence() as u64;
            last_at = Some(e.headers.recorded_at);
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
    pool: &event_store::Reader,
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
        AggregateKind::Subject => {
            fold::<SubjectRecord, SubjectState>(pool, tenant, kind, id, as_of).await
        }
    }
}
