//! `GET /v1/conversations/{id}/stream`: a conversation's events as Server-Sent Events, as
//! the read model applies them, so a client sees the assistant's reply arrive without
//! polling. Each domain event is an SSE event: `id` its version (what `Last-Event-ID`
//! resumes after), `event` its type, `data` its JSON. While the assistant writes a reply,
//! its pieces come as `reply.delta` events without an `id` (data: `reply_to`, `attempt`,
//! `seq`, `text`; a new `attempt` replaces the pieces of earlier ones), from whichever
//! process calls the model (`projection::deltas`); they are never stored nor replayed,
//! and the reply's `MessageSent` is the answer (a client that reconnects mid-reply gets
//! it; pieces of a reply already sent are not shown). Heartbeats keep proxies from
//! closing an idle stream; the stream ends after the conversation's end, or at the time
//! limit with an `end` event (an `EventSource` reconnects and resumes by itself).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use platform::auth::Principal;
use platform::problem::Problem;
use projection::deltas::Delta;
use schemas::{AggregateKind, Version, VersionToken};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::reads::visible;
use super::{AppState, read_failed, stream_failed};

/// How often an open stream looks for newly applied events without announcements (tests
/// without a listener), and with them (in case one was lost while reconnecting).
const POLL: Duration = Duration::from_millis(100);
const POLL_ANNOUNCED: Duration = Duration::from_secs(1);
/// Events read from the store in one go.
const PAGE: i64 = 200;

/// Open live streams per tenant and per subject (so that one member's streams cannot
/// take the whole tenant's), each slot given back when its stream ends.
#[derive(Debug)]
pub struct LiveStreams {
    per_tenant: usize,
    per_subject: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    tenants: HashMap<String, usize>,
    subjects: HashMap<(String, String), usize>,
}

/// Streams one subject may hold, by default.
pub const PER_SUBJECT: usize = 10;

impl LiveStreams {
    /// A stream wakes at the read model's commit announcements (`AppState::progress`),
    /// with a slow poll besides; without announcements it polls. At most `per_tenant`
    /// streams of a tenant and [`PER_SUBJECT`] of one subject.
    pub fn new(per_tenant: usize) -> Arc<Self> {
        Self::with_per_subject(per_tenant, PER_SUBJECT)
    }

    /// At most `per_tenant` streams of a tenant and `per_subject` of one subject.
    pub fn with_per_subject(per_tenant: usize, per_subject: usize) -> Arc<Self> {
        Arc::new(LiveStreams {
            per_tenant,
            per_subject: per_subject.min(per_tenant),
            open: Mutex::new(Open::default()),
        })
    }

    fn take(self: &Arc<Self>, tenant: &str, subject: &str) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.to_owned(), subject.to_owned());
        let tenant_open = open.tenants.get(tenant).copied().unwrap_or(0);
        let subject_open = open.subjects.get(&key).copied().unwrap_or(0);
        if tenant_open >= self.per_tenant || subject_open >= self.per_subject {
            return None;
        }
        *open.tenants.entry(tenant.to_owned()).or_default() += 1;
        *open.subjects.entry(key.clone()).or_default() += 1;
        Some(Slot {
            streams: self.clone(),
            key,
        })
    }
}

/// One open stream of a subject of a tenant.
struct Slot {
    streams: Arc<LiveStreams>,
    key: (String, String),
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.tenants.get_mut(&self.key.0) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.tenants.remove(&self.key.0);
            }
        }
        if let Some(n) = open.subjects.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.subjects.remove(&self.key);
            }
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StreamQuery {
    /// Start after this version (what `Last-Event-ID` says, for clients that cannot set
    /// headers); default 0, the whole conversation.
    #[param(minimum = 0)]
    pub after: Option<i64>,
}

/// The header an SSE client sends when it reconnects.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read from the headers by `stream`; here for the documents
pub struct LastEventId {
    /// Resume after this version (wins over `after`).
    #[param(rename = "Last-Event-ID", value_type = String, required = false, pattern = r"^[0-9]{1,18}$")]
    last_event_id: Option<String>,
}

/// A conversation's events as Server-Sent Events, live (see the module docs).
#[utoipa::path(get, path = "/v1/conversations/{id}/stream",
    params(("id" = Uuid, Path), StreamQuery, LastEventId),
    responses((status = 200, content_type = "text/event-stream", description = "SSE: `id` = version, `event` = event type, `data` = the event"),
              (status = 400), (status = 401), (status = 404), (status = 503)),
    security(("bearer" = [])))]
pub async fn conversation_stream(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let id: Uuid = id.parse().map_err(|_| Problem::not_found())?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    Problem::bad_request("invalid_last_event_id", "Last-Event-ID must be a version")
                })?,
        ),
        None => None,
    };
    let after = resume.or(q.after).unwrap_or(0);
    if after < 0 {
        return Err(Problem::bad_request(
            "invalid_query",
            "after must not be negative",
        ));
    }
    // A conversation started a moment ago may not be in the read model yet: the event
    // store says whether it exists and is the caller's to see, and the stream shows its
    // events as the read model applies them.
    let scope = who.scope();
    let projected = app
        .reads
        .conversation(&scope, id)
        .await
        .map_err(read_failed)?
        .is_some();
    let token = VersionToken {
        kind: AggregateKind::Conversation,
        id,
        version: Version(0),
    };
    if !projected
        && !visible(&app, &scope, &token)
            .await
            .map_err(|e| stream_failed(&e))?
    {
        return Err(Problem::not_found());
    }
    let Some(slot) = app.live.take(&who.tenant_id, &who.subject) else {
        return Err(Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "Too many live streams",
        )
        .detail("you or your tenant have as many live streams open as allowed; close one or retry later")
        .retry_after(5));
    };
    let state = Live {
        // The store as the reads see it, opened by the one reader (sealed fields in clear,
        // `[erased]` once erased).
        events: app.events.on_pool(app.reads.pool().clone()),
        id,
        tenant: who.tenant_id.clone(),
        sent: after,
        pending: VecDeque::new(),
        deltas: app.progress.as_ref().map(|p| p.deltas()),
        pieces: VecDeque::new(),
        answered: HashSet::new(),
        stale: true,
        announced: app.progress.as_ref().map(|p| p.of(read_model::NAME)),
        deadline: tokio::time::Instant::now() + app.stream_max,
        done: false,
        _slot: slot,
    };
    Ok(axum::response::sse::Sse::new(events(state))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct Live {
    events: event_store::Reader,
    id: Uuid,
    tenant: String,
    /// The last version read from the store.
    sent: i64,
    /// Read and not sent yet, oldest first.
    pending: VecDeque<event_store::StoredEvent>,
    /// Every reply delta of the database (this conversation's are shown).
    deltas: Option<broadcast::Receiver<Arc<Delta>>>,
    /// This conversation's deltas not sent yet.
    pieces: VecDeque<Arc<Delta>>,
    /// User messages whose reply was sent: their late pieces are not shown.
    answered: HashSet<Uuid>,
    /// The read model may have applied more than was read (a piece of a reply alone
    /// does not send the stream to the store).
    stale: bool,
    announced: Option<tokio::sync::watch::Receiver<u64>>,
    deadline: tokio::time::Instant,
    done: bool,
    _slot: Slot,
}

fn events(state: Live) -> impl Stream<Item = Result<Sse, Infallible>> {
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop_front() {
                if e.event_type == "ConversationEnded" {
                    s.done = true;
                    s.pending.clear();
                }
                let data = e
                    .payload
                    .get(&e.event_type)
                    .cloned()
                    .unwrap_or_else(|| e.payload.clone());
                if let Some(reply_to) = data
                    .get("reply_to")
                    .and_then(|r| r.as_str())
                    .and_then(|r| r.parse().ok())
                {
                    s.answered.insert(reply_to);
                }
                let item = Sse::default()
                    .id(e.sequence.to_string())
                    .event(e.event_type)
                    .data(data.to_string());
                return Some((Ok(item), s));
            }
            if let Some(piece) = s.pieces.pop_front() {
                if s.answered.contains(&piece.reply_to) {
                    continue;
                }
                let item = Sse::default().event("reply.delta").data(
                    json!({
                        "reply_to": piece.reply_to,
                        "attempt": piece.attempt,
                        "seq": piece.seq,
                        "text": piece.text,
                    })
                    .to_string(),
                );
                return Some((Ok(item), s));
            }
            if s.done {
                return None;
            }
            if tokio::time::Instant::now() >= s.deadline {
                s.done = true;
                let end = Sse::default()
                    .event("end")
                    .data(json!({"reason": "time_limit", "last_event_id": s.sent}).to_string());
                return Some((Ok(end), s));
            }
            if !s.stale {
                s.wait().await;
                continue;
            }
            match next_batch(&s.events, s.id, s.sent).await {
                Err(e) => {
                    s.done = true;
                    tracing::warn!(error = %e, conversation = %s.id, "live stream ended: the store could not be read");
                    let error = Sse::default().event("error").data(
                        json!({"code": "database_unavailable", "last_event_id": s.sent})
                            .to_string(),
                    );
                    return Some((Ok(error), s));
                }
                Ok(batch) if batch.is_empty() => {
                    s.stale = false;
                    s.wait().await;
                }
                Ok(batch) => {
                    if let Some(last) = batch.last() {
                        s.sent = last.sequence;
                    }
                    s.pending.extend(batch);
                }
            }
        }
    })
}

impl Live {
    /// Until the read model may have applied more, or a piece of a reply comes.
    async fn wait(&mut self) {
        let (id, tenant) = (self.id, self.tenant.as_str());
        let Some(announced) = self.announced.as_mut() else {
            tokio::time::sleep(POLL).await;
            self.stale = true;
            return;
        };
        let deltas = async {
            let Some(deltas) = self.deltas.as_mut() else {
                return std::future::pending().await;
            };
            loop {
                match deltas.recv().await {
                    Ok(d) if d.conversation_id == id && d.tenant_id == tenant => return Some(d),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(POLL_ANNOUNCED, announced.changed()) => self.stale = true,
            piece = deltas => match piece {
                Some(piece) => self.pieces.push_back(piece),
                None => self.deltas = None,
            },
        }
    }
}

/// Events of the conversation after version `sent` that the read model has applied.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("opening a stored event: {0}")]
    Open(#[from] event_store::protect::ProtectError),
}

/// The conversation's next events after version `sent` that the read model has applied,
/// opened.
async fn next_batch(
    events: &event_store::Reader,
    id: Uuid,
    sent: i64,
) -> Result<Vec<event_store::StoredEvent>, ReadError> {
    let pool = events.pool();
    let token = VersionToken {
        kind: AggregateKind::Conversation,
        id,
        version: Version(0),
    };
    let applied =
        projection::progress::applied_version(pool, read_model::NAME, &token).await? as i64;
    if applied <= sent {
        return Ok(Vec::new());
    }
    let mut batch = event_store::log::aggregate_events(
        pool,
        AggregateKind::Conversation.as_str(),
        &id.to_string(),
        sent + 1..=applied.min(sent + PAGE),
    )
    .await?;
    for stored in &mut batch {
        events.open_stored(stored).await?;
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_has_its_own_slots_given_back_when_a_stream_ends() {
        let streams = LiveStreams::new(2);
        let a1 = streams.take("acme", "ann").expect("first");
        let _a2 = streams.take("acme", "bob").expect("second");
        assert!(streams.take("acme", "cy").is_none(), "the third is refused");
        let _g = streams
            .take("globex", "ann")
            .expect("another tenant is not affected");
        drop(a1);
        assert!(streams.take("acme", "cy").is_some(), "a slot came back");
    }

    #[test]
    fn one_subject_cannot_take_the_whole_tenants_slots() {
        let streams = LiveStreams::with_per_subject(5, 2);
        let _a: Vec<Slot> = (0..2)
            .map(|_| streams.take("acme", "ann").expect("ann's"))
            .collect();
        assert!(streams.take("acme", "ann").is_none(), "ann has her share");
        let boss = streams.take("acme", "boss");
        assert!(boss.is_some(), "the admin still gets one");
    }
}
