//! Audit handlers (roles `auditor` and `admin`): NDJSON event streams and state-as-of.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use platform::auth::{Principal, Role};
use platform::problem::{Problem, Query};
use schemas::{AggregateKind, CommitPosition, EventType};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, checked_time};
use crate::audit::{self, AsOf, StateError, StateView, TenantFilter};

const AUDITORS: &[Role] = &[Role::Auditor, Role::Admin];

fn ndjson(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

fn aggregate(kind: &str, id: &str) -> Result<(AggregateKind, String), Problem> {
    let kind = AggregateKind::parse(kind)
        .ok_or_else(|| Problem::not_found().detail("unknown aggregate type"))?;
    let id: uuid::Uuid = id.parse().map_err(|_| Problem::not_found())?;
    Ok((kind, id.to_string()))
}

/// A place among the audit streams open at once, or 503 `too_many_streams`.
fn stream_permit(app: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, Problem> {
    app.streams.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "Too many audit streams",
        )
        .detail("as many audit streams as this server serves at once are open; retry shortly")
        .retry_after(5)
    })
}

/// The stream, keeping its place among the open streams until it ends.
fn holding<S: futures::Stream + Send + 'static>(
    permit: tokio::sync::OwnedSemaphorePermit,
    stream: S,
) -> impl futures::Stream<Item = S::Item> + Send + 'static {
    use futures::StreamExt;
    stream.map(move |item| {
        let _held = &permit;
        item
    })
}

fn db_error(e: sqlx::Error) -> Problem {
    super::database_failed(&e)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TenantEvents {
    /// Start after this position (`<tx_id>.<global_position>`, from a previous line).
    #[param(pattern = r"^[0-9]{1,19}\.[0-9]{1,19}$")]
    pub after: Option<String>,
    /// Stop at this position, inclusive.
    #[param(pattern = r"^[0-9]{1,19}\.[0-9]{1,19}$")]
    pub until: Option<String>,
    /// Only events recorded at or after this time (RFC 3339).
    pub from_time: Option<DateTime<Utc>>,
    /// Only events recorded before this time (RFC 3339).
    pub to_time: Option<DateTime<Utc>>,
    /// Comma-separated event types, e.g. `MessageSent,ConversationEnded`.
    #[param(schema_with = event_type_list)]
    pub types: Option<String>,
}

/// `types` as the documents state it: known event type names, comma-separated.
fn event_type_list() -> utoipa::openapi::schema::Object {
    let names: Vec<&str> = EventType::ALL.into_iter().map(EventType::as_str).collect();
    let one = format!("({})", names.join("|"));
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(format!("^$|^{one}(,{one})*$")))
        .build()
}

fn position(raw: Option<&str>, name: &str) -> Result<Option<CommitPosition>, Problem> {
    raw.map(|r| {
        r.parse().map_err(|_| {
            Problem::bad_request(
                "invalid_position",
                format!("{name} must be <tx_id>.<global_position>"),
            )
        })
    })
    .transpose()
}

/// All events of the caller's tenant in committed global order, as NDJSON; ends with an
/// `{"end":…}` or `{"error":…}` line.
#[utoipa::path(get, path = "/v1/audit/events", params(TenantEvents),
    responses((status = 200, content_type = "application/x-ndjson", description = "One event per line, then a trailer line"), (status = 400), (status = 403)),
    security(("bearer" = [])))]
pub async fn tenant_events(
    State(app): State<AppState>,
    who: Principal,
    Query(q): Query<TenantEvents>,
) -> Result<Response, Problem> {
    who.require_any(AUDITORS)?;
    let permit = stream_permit(&app)?;
    let event_types = match q.types.as_deref() {
        None | Some("") => None,
        Some(list) => Some(
            list.split(',')
                .map(|t| {
                    EventType::parse(t.trim())
                        .map(|t| t.as_str().to_owned())
                        .ok_or_else(|| {
                            Problem::bad_request(
                                "invalid_event_type",
                                format!("unknown event type {t:?}"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let after = position(q.after.as_deref(), "after")?;
    // Asked before the stream starts, so a database that is down answers 503, not 200
    // with an error line.
    let next = event_store::log::next_tx_id(app.reads.pool())
        .await
        .map_err(db_error)?;
    if let Some(after) = after
        && after.tx_id > next
    {
        // Not a position of this cluster (restored or migrated since it was handed
        // out): reading after it would skip events silently.
        return Err(Problem::bad_request(
            "position_from_another_cluster",
            format!(
                "after is at transaction {}, beyond this cluster's {next}: the database was \
                     restored or migrated since; start again without after",
                after.tx_id
            ),
        ));
    }
    let filter = TenantFilter {
        after: after.unwrap_or(CommitPosition::START),
        store: event_store::log::TenantFilter {
            until: position(q.until.as_deref(), "until")?,
            from_time: checked_time("from_time", q.from_time)?,
            to_time: checked_time("to_time", q.to_time)?,
            event_types,
        },
    };
    let stream = audit::tenant_events(app.events.clone(), who.tenant_id, filter, app.stream_max);
    Ok(ndjson(Body::from_stream(holding(permit, stream))))
}

/// The events of one aggregate by sequence, as NDJSON with a trailer line.
#[utoipa::path(get, path = "/v1/audit/{aggregate_type}/{id}/events",
    params(("aggregate_type" = String, Path, description = "conversation or document"), ("id" = uuid::Uuid, Path)),
    responses((status = 200, content_type = "application/x-ndjson"), (status = 404), (status = 403)),
    security(("bearer" = [])))]
pub async fn aggregate_events(
    State(app): State<AppState>,
    who: Principal,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    who.require_any(AUDITORS)?;
    let (kind, id) = aggregate(&kind, &id)?;
    let permit = stream_permit(&app)?;
    let pool = app.reads.pool().clone();
    if !audit::owned_by(&pool, kind, &id, &who.tenant_id)
        .await
        .map_err(db_error)?
    {
        return Err(Problem::not_found());
    }
    let stream = audit::aggregate_events(app.events.clone(), kind, id, app.stream_max);
    Ok(ndjson(Body::from_stream(holding(permit, stream))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// Fold events 1..=version.
    pub version: Option<u64>,
    /// Fold events recorded at or before this time (RFC 3339).
    pub at: Option<DateTime<Utc>>,
}

/// The aggregate as of a version or a time, folded with the command side's own code.
#[utoipa::path(get, path = "/v1/audit/{aggregate_type}/{id}/state",
    params(("aggregate_type" = String, Path), ("id" = uuid::Uuid, Path), StateQuery),
    responses((status = 200, body = StateView), (status = 400), (status = 404)),
    security(("bearer" = [])))]
pub async fn state(
    State(app): State<AppState>,
    who: Principal,
    Path((kind, id)): Path<(String, String)>,
    Query(q): Query<StateQuery>,
) -> Result<Json<StateView>, Problem> {
    who.require_any(AUDITORS)?;
    let (kind, id) = aggregate(&kind, &id)?;
    let at = checked_time("at", q.at)?;
    let as_of = match (q.version, at) {
        (Some(0), None) => {
            return Err(Problem::bad_request(
                "invalid_version",
                "versions start at 1",
            ));
        }
        (Some(v), None) => AsOf::Version(v),
        (None, Some(t)) => AsOf::Time(t),
        (None, None) => AsOf::Latest,
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "invalid_query",
                "give version or at, not both",
            ));
        }
    };
    match audit::state_at(&app.events, &who.tenant_id, kind, &id, as_of).await {
        Ok(Some(view)) => Ok(Json(view)),
        Ok(None) => Err(Problem::not_found().detail("no such aggregate at that version or time")),
        Err(StateError::Database(e)) => Err(db_error(e)),
        Err(StateError::Corrupt(reason)) => {
            tracing::error!(%reason, "stored events do not fold");
            Err(Problem::internal())
        }
    }
}

/// A link of the audit chain: its number and SHA-256 in hex.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainLink {
    pub n: i64,
    pub link: String,
}

/// A head recorded by the chain's keeper.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordedHead {
    pub n: i64,
    pub link: String,
    pub recorded_at: DateTime<Utc>,
}

/// The caller's tenant's audit chain: its newest link, the heads recorded most recently,
/// and the committed events (of every tenant) not chained yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainView {
    pub tip: Option<ChainLink>,
    pub recorded: Vec<RecordedHead>,
    /// Counted up to 100,000.
    pub pending_events: i64,
}

/// The heads shown by `GET /v1/audit/chain`.
const HEADS_SHOWN: i64 = 20;

/// The tenant's audit chain: the newest link and the heads recorded lately.
#[utoipa::path(get, path = "/v1/audit/chain",
    responses((status = 200, body = ChainView), (status = 403)),
    security(("bearer" = [])))]
pub async fn chain(
    State(app): State<AppState>,
    who: Principal,
) -> Result<Json<ChainView>, Problem> {
    who.require_any(AUDITORS)?;
    let state = event_store::chain::state(app.reads.pool(), &who.tenant_id, HEADS_SHOWN)
        .await
        .map_err(db_error)?;
    Ok(Json(ChainView {
        tip: state.tip.map(|tip| ChainLink {
            n: tip.n,
            link: hex::encode(tip.link),
        }),
        recorded: state
            .recorded
            .into_iter()
            .map(|(head, recorded_at)| RecordedHead {
                n: head.n,
                link: hex::encode(head.link),
                recorded_at,
            })
            .collect(),
        pending_events: state.pending,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// Resume after this link (`through` of a previous answer); 0 or absent: from the
    /// first.
    #[param(minimum = 0)]
    pub after: Option<i64>,
}

/// Recomputes the tenant's audit chain from the events as stored and compares the heads
/// recorded on the way: NDJSON, a `progress` line per page, then `end` (every link holds),
/// `broken` (the first link that does not: `altered`, `missing` or `head_differs`, with
/// its event) or `error` (resume with `after` = its `through`).
#[utoipa::path(get, path = "/v1/audit/verify", params(VerifyQuery),
    responses((status = 200, content_type = "application/x-ndjson", description = "Progress lines, then an end, broken or error line"), (status = 400), (status = 403)),
    security(("bearer" = [])))]
pub async fn verify(
    State(app): State<AppState>,
    who: Principal,
    Query(q): Query<VerifyQuery>,
) -> Result<Response, Problem> {
    who.require_any(AUDITORS)?;
    let after = q.after.unwrap_or(0);
    let permit = stream_permit(&app)?;
    // Asked before the stream starts: a database that is down answers 503, and an `after`
    // beyond the chain is the caller's mistake, not a stream that ends at once.
    let tip = event_store::chain::tip(app.reads.pool(), &who.tenant_id)
        .await
        .map_err(db_error)?
        .map_or(0, |tip| tip.n);
    if !(0..=tip).contains(&after) {
        return Err(Problem::bad_request(
            "invalid_after",
            format!("after must be a link of this tenant's chain, 0 to {tip}"),
        ));
    }
    let stream = audit::verify_chain(
        app.reads.pool().clone(),
        who.tenant_id,
        after,
        audit::VERIFY_PAGE,
        app.stream_max,
    );
    Ok(ndjson(Body::from_stream(holding(permit, stream))))
}

/// Everything Threadline holds about a subject (GDPR Art. 15 and 20), as one NDJSON
/// stream: first `{"export": …}` naming what follows, then the events of every
/// conversation the person started (or the one conversation), of the documents made from
/// them, of their inbox and of their erasure record, each opened as the audit replays
/// open them (`[erased]` where erased), then the `end` trailer. The person themselves, or
/// an admin of the tenant.
#[utoipa::path(get, path = "/v1/subjects/{subject}/export",
    params(("subject" = String, Path, description = "user:<sub> or conversation:<uuid>")),
    responses((status = 200, description = "NDJSON: the export line, events, end", content_type = "application/x-ndjson"), (status = 400), (status = 403)),
    security(("bearer" = [])))]
pub async fn export_subject(
    State(app): State<AppState>,
    who: Principal,
    Path(subject): Path<String>,
) -> Result<Response, Problem> {
    use schemas::Subject;
    let subject = Subject::parse(&subject)
        .map_err(|e| Problem::bad_request("invalid_subject", e.to_string()))?;
    if !matches!(&subject, Subject::User(sub) if *sub == who.subject) {
        who.require_any(&[Role::Admin])?;
    }
    if subject == Subject::Tenant {
        return Err(Problem::bad_request(
            "invalid_subject",
            "export a person (user:<sub>) or a conversation (conversation:<uuid>)",
        ));
    }
    let permit = stream_permit(&app)?;
    let tenant = who.tenant_id.clone();
    let (conversations, documents) = app
        .reads
        .subject_aggregates(&tenant, &subject)
        .await
        .map_err(super::read_failed)?;
    let mut aggregates: Vec<(AggregateKind, String)> = conversations
        .iter()
        .map(|id| (AggregateKind::Conversation, id.to_string()))
        .chain(
            documents
                .iter()
                .map(|id| (AggregateKind::Document, id.to_string())),
        )
        .collect();
    if let Subject::User(sub) = &subject {
        let inbox = domain::inbox::inbox_id(&tenant, sub);
        aggregates.push((AggregateKind::Inbox, inbox.to_string()));
    }
    let record = domain::subject::subject_id(&tenant, &subject);
    aggregates.push((AggregateKind::Subject, record.to_string()));
    let head = serde_json::json!({"export": {
        "subject": subject.to_string(),
        "tenant_id": tenant,
        "conversations": conversations,
        "documents": documents,
        "exported_at": Utc::now(),
    }});
    let head = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(format!("{head}\n")))
    });
    let events = audit::aggregates_events(app.events.clone(), aggregates, app.stream_max);
    use futures::StreamExt;
    Ok(ndjson(Body::from_stream(holding(
        permit,
        head.chain(events),
    ))))
}
