//! Qdrant over gRPC (`qdrant-client`, port 6334): the [`VectorStore`] for deployments that
//! run a Qdrant server.
//!
//! What it owns:
//!
//! * One collection per [`IndexName`], named `<prefix><index>` (`QDRANT_COLLECTION_PREFIX`,
//!   default `threadline_`), one unnamed dense vector compared by cosine. Qdrant normalises
//!   vectors of a cosine collection, so scores are cosine similarities, as in [`crate::pg`].
//! * Keyword payload indexes on `tenant_id` (`is_tenant`, so Qdrant lays points out by
//!   tenant), `source_kind`, `source_id`, `conversation_id` and `started_by`.
//! * The payload: every [`Payload`] field, uuids as strings, `position` and `chunk` as
//!   integers; an absent `conversation_id` or `started_by` is left out of the payload.
//! * The filters: every search, delete, rename and count is filtered by tenant inside
//!   Qdrant. A member's search adds `access`'s visibility rule, clause by clause:
//!   `source_kind = knowledge OR started_by is empty (missing or null) OR started_by =
//!   subject`. Keyword matches are built as `Match::Keyword` explicitly: the client's
//!   `From<String>` turns a string with whitespace into a full-text match.
//! * No alias: which collection is live is the live generation's `index_info` in
//!   PostgreSQL (a real Qdrant applies the actions of one alias change one by one, without
//!   rollback, so an alias could not be moved all-or-nothing anyway).
//! * `min_score` keeps a hit scoring exactly it, as the trait promises: Qdrant keeps only
//!   scores above `score_threshold`, so the request asks for the next float below and the
//!   answer is filtered here.
//!
//! Errors: unreachable, overloaded, timed out, internal and authentication failures are
//! [`VectorError::Unavailable`] (retry later, never drop data); a missing collection is
//! [`VectorError::NoIndex`]; a refused request (wrong dimension, bad argument) is
//! [`VectorError::Rejected`].
//!
//! Tested here against an in-process fake of Qdrant's gRPC services
//! (`tests/qdrant_grpc.rs`, which also runs [`crate::conformance`]); a real server cannot
//! be built on the development machines, so the conformance suite runs against one from
//! outside (`cargo run -p vectors --example conformance -- --qdrant URL`, docs/OPERATIONS.md).
//! Checked against Qdrant 1.19.0 that way: `AlreadyExists` for an existing collection,
//! success for deleting a missing one, `NotFound` for a missing one's info, a wrong
//! dimension refused, a wrong API key and a refused connection unavailable, and the
//! threshold exclusive (hence the next float below). Unverified: the error codes of real
//! network failures beyond "connection refused" and "no answer in time".

use std::collections::HashMap;
use std::time::Duration;

use qdrant_client::qdrant::r#match::MatchValue;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::value::Kind;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeleteCollectionBuilder, DeletePointsBuilder, Distance, FieldCondition, FieldType, Filter,
    KeywordIndexParamsBuilder, Match, PointStruct, Query, QueryPointsBuilder, RepeatedStrings,
    ScoredPoint, SetPayloadPointsBuilder, UpsertPointsBuilder, Value, VectorParamsBuilder,
    vectors_config,
};
use qdrant_client::{Qdrant, QdrantError};
use tonic::{Code, Status};
use uuid::Uuid;

use access::{Admission, Clause};

use crate::{Hit, IndexName, Payload, Point, SearchQuery, SourceKind, VectorError, VectorStore};

/// The collection-name prefix when `QDRANT_COLLECTION_PREFIX` is not set.
pub const DEFAULT_PREFIX: &str = "threadline_";
/// The per-request deadline when `QDRANT_TIMEOUT_MS` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Points per upsert request (a request stays well under gRPC's message size limits).
const UPSERT_BATCH: usize = 256;

/// Payload keys.
pub mod field {
    pub const TENANT_ID: &str = "tenant_id";
    pub const SOURCE_KIND: &str = "source_kind";
    pub const SOURCE_ID: &str = "source_id";
    pub const CONVERSATION_ID: &str = "conversation_id";
    pub const STARTED_BY: &str = "started_by";
    pub const TITLE: &str = "title";
    pub const EVENT_ID: &str = "event_id";
    pub const POSITION: &str = "position";
    pub const CHUNK: &str = "chunk";
    pub const TEXT: &str = "text";

    /// The keyword-indexed keys (the ones filters use).
    pub const INDEXED: [&str; 5] = [
        TENANT_ID,
        SOURCE_KIND,
        SOURCE_ID,
        CONVERSATION_ID,
        STARTED_BY,
    ];
}

/// `QDRANT_URL` (gRPC, e.g. `http://qdrant:6334`), `QDRANT_API_KEY` (optional),
/// `QDRANT_COLLECTION_PREFIX` (default `threadline_`), `QDRANT_TIMEOUT_MS` (default 10000).
#[derive(Clone, PartialEq)]
pub struct QdrantConfig {
    pub url: String,
    pub api_key: Option<String>,
    /// Prepended to index names to name collections.
    pub collection_prefix: String,
    /// Deadline of each request, and of connecting.
    pub timeout: Duration,
}

impl std::fmt::Debug for QdrantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantConfig")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("collection_prefix", &self.collection_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl QdrantConfig {
    /// A configuration for `url` with the default prefix and timeout and no API key.
    pub fn new(url: impl Into<String>) -> Self {
        QdrantConfig {
            url: url.into(),
            api_key: None,
            collection_prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// `QDRANT_COLLECTION_PREFIX`, checked.
pub fn prefix_setting(prefix: &str) -> Result<String, String> {
    check_prefix(prefix).map(|()| prefix.to_owned())
}

/// A prefix keeps collection names plain: at most 64 of `a-z A-Z 0-9 _ -`.
fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok = prefix.len() <= 64
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err("use at most 64 of a-z, A-Z, 0-9, _ and -".into())
    }
}

pub struct QdrantStore {
    client: Qdrant,
    prefix: String,
}

impl QdrantStore {
    /// A store on `config`'s server. Nothing is sent yet: an unreachable server shows as
    /// [`VectorError::Unavailable`] on first use, so a service can start before Qdrant.
    pub async fn connect(config: QdrantConfig) -> Result<Self, VectorError> {
        check_prefix(&config.collection_prefix).map_err(VectorError::Rejected)?;
        if !matches!(config.url.split_once("://"), Some(("http" | "https", _))) {
            return Err(VectorError::Rejected(format!(
                "QDRANT_URL {:?} is not an http:// or https:// URL",
                config.url
            )));
        }
        let client = Qdrant::from_url(&config.url)
            .api_key(config.api_key.clone())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .skip_compatibility_check()
            .build()
            .map_err(|e| VectorError::Rejected(format!("the Qdrant client: {e}")))?;
        Ok(QdrantStore {
            client,
            prefix: config.collection_prefix,
        })
    }

    /// The collection holding `index`.
    pub fn collection_name(&self, index: &IndexName) -> String {
        format!("{}{index}", self.prefix)
    }

    /// Deletes the points of `index` that `filter` selects, and waits until it is done.
    async fn delete_where(&self, index: &IndexName, filter: Filter) -> Result<(), VectorError> {
        let request = DeletePointsBuilder::new(self.collection_name(index))
            .points(filter)
            .wait(true);
        self.client
            .delete_points(request)
            .await
            .map_err(|e| client_error(e, index))?;
        Ok(())
    }

    /// The vector size of `index`'s collection, `None` if there is no such collection.
    async fn dimension_of(&self, index: &IndexName) -> Result<Option<u64>, VectorError> {
        let info = match self
            .client
            .collection_info(self.collection_name(index))
            .await
        {
            Ok(info) => info,
            Err(e) if code_of(&e) == Some(Code::NotFound) => return Ok(None),
            Err(e) => return Err(client_error(e, index)),
        };
        let config = info
            .result
            .and_then(|i| i.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        match config {
            Some(vectors_config::Config::Params(params)) => Ok(Some(params.size)),
            _ => Err(VectorError::Rejected(format!(
                "collection {} is not a collection of one unnamed vector",
                self.collection_name(index)
            ))),
        }
    }

    /// `Ok` if the collection's vectors are of `wanted` dimensions.
    fn same_dimension(index: &IndexName, found: u64, wanted: u64) -> Result<(), VectorError> {
        if found == wanted {
            Ok(())
        } else {
            Err(VectorError::Rejected(format!(
                "index {index} holds vectors of {found} dimensions, not {wanted}"
            )))
        }
    }
}

#[async_trait::async_trait]
impl VectorStore for QdrantStore {
    async fn create_index(&self, index: &IndexName, dimension: usize) -> Result<(), VectorError> {
        let wanted = u64::try_from(dimension)
            .ok()
            .filter(|d| *d > 0)
            .ok_or_else(|| VectorError::Rejected(format!("dimension {dimension} is invalid")))?;
        let name = self.collection_name(index);
        match self.dimension_of(index).await? {
            Some(found) => Self::same_dimension(index, found, wanted)?,
            None => {
                let create = CreateCollectionBuilder::new(&name)
                    .vectors_config(VectorParamsBuilder::new(wanted, Distance::Cosine));
                match self.client.create_collection(create).await {
                    Ok(_) => {}
                    // Another writer created it first: theirs must match.
                    Err(e) if already_exists(&e) => match self.dimension_of(index).await? {
                        Some(found) => Self::same_dimension(index, found, wanted)?,
                        None => {
                            return Err(VectorError::Unavailable(format!(
                                "collection {name} was created and removed concurrently"
                            )));
                        }
                    },
                    Err(e) => return Err(client_error(e, index)),
                }
            }
        }
        // Every time, so an index whose creation was interrupted gets its payload indexes.
        for key in field::INDEXED {
            let mut request =
                CreateFieldIndexCollectionBuilder::new(&name, key, FieldType::Keyword).wait(true);
            if key == field::TENANT_ID {
                request = request
                    .field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true));
            }
            self.client
                .create_field_index(request)
                .await
                .map_err(|e| client_error(e, index))?;
        }
        Ok(())
    }

    async fn exists(&self, index: &IndexName) -> Result<bool, VectorError> {
        Ok(self.dimension_of(index).await?.is_some())
    }

    async fn drop_index(&self, index: &IndexName) -> Result<(), VectorError> {
        match self
            .client
            .delete_collection(DeleteCollectionBuilder::new(self.collection_name(index)))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some(Code::NotFound) => Ok(()),
            Err(e) => Err(client_error(e, index)),
        }
    }

    async fn upsert(&self, index: &IndexName, points: &[Point]) -> Result<(), VectorError> {
        let name = self.collection_name(index);
        for batch in points.chunks(UPSERT_BATCH) {
            let batch: Vec<PointStruct> = batch
                .iter()
                .map(|p| {
                    PointStruct::new(
                        p.id.to_string(),
                        p.vector.clone(),
                        to_qdrant_payload(&p.payload),
                    )
                })
                .collect();
            self.client
                .upsert_points(UpsertPointsBuilder::new(&name, batch).wait(true))
                .await
                .map_err(|e| client_error(e, index))?;
        }
        Ok(())
    }

    async fn delete_source(
        &self,
        index: &IndexName,
        tenant_id: &str,
        kind: SourceKind,
        source_id: Uuid,
    ) -> Result<(), VectorError> {
        self.delete_where(index, source_filter(tenant_id, kind, source_id))
            .await
    }

    async fn erase(
        &self,
        index: &IndexName,
        tenant_id: &str,
        conversations: Option<&[Uuid]>,
    ) -> Result<(), VectorError> {
        let mut must = vec![keyword(field::TENANT_ID, tenant_id)];
        if let Some(conversations) = conversations {
            if conversations.is_empty() {
                return Ok(());
            }
            must.push(any_keyword(
                field::CONVERSATION_ID,
                conversations.iter().map(Uuid::to_string).collect(),
            ));
        }
        self.delete_where(index, Filter::must(must)).await
    }

    async fn set_conversation_title(
        &self,
        index: &IndexName,
        tenant_id: &str,
        conversation_id: Uuid,
        title: &str,
    ) -> Result<(), VectorError> {
        let payload = HashMap::from([(field::TITLE.to_owned(), Value::from(title))]);
        let request = SetPayloadPointsBuilder::new(self.collection_name(index), payload)
            .points_selector(title_filter(tenant_id, conversation_id))
            .wait(true);
        self.client
            .set_payload(request)
            .await
            .map_err(|e| client_error(e, index))?;
        Ok(())
    }

    async fn search(
        &self,
        index: &IndexName,
        query: &SearchQuery<'_>,
    ) -> Result<Vec<Hit>, VectorError> {
        // Qdrant refuses a limit of 0, and no kind matches nothing.
        if query.limit == 0 || query.kinds.is_empty() {
            return Ok(Vec::new());
        }
        let mut request = QueryPointsBuilder::new(self.collection_name(index))
            .query(Query::new_nearest(query.vector.to_vec()))
            .filter(search_filter(query))
            .limit(query.limit as u64)
            .with_payload(true);
        if let Some(min) = query.min_score {
            // Qdrant keeps scores above the threshold; the trait keeps those equal to it.
            request = request.score_threshold(min.next_down());
        }
        let response = self
            .client
            .query(request)
            .await
            .map_err(|e| client_error(e, index))?;
        let mut hits: Vec<Hit> = response
            .result
            .into_iter()
            .filter_map(hit_from)
            .filter(|hit| query.min_score.is_none_or(|min| hit.score >= min))
            .filter(|hit| {
                // The filter already did this; a point of another tenant is never returned.
                let ours = hit.payload.tenant_id == query.scope.tenant;
                if !ours {
                    tracing::warn!(id = %hit.id, "Qdrant returned a point of another tenant: dropped");
                }
                ours
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits.truncate(query.limit);
        Ok(hits)
    }

    async fn count(&self, index: &IndexName, tenant_id: Option<&str>) -> Result<u64, VectorError> {
        let mut request = CountPointsBuilder::new(self.collection_name(index)).exact(true);
        if let Some(tenant) = tenant_id {
            request = request.filter(Filter::must([keyword(field::TENANT_ID, tenant)]));
        }
        let response = self
            .client
            .count(request)
            .await
            .map_err(|e| client_error(e, index))?;
        response.result.map(|r| r.count).ok_or_else(|| {
            VectorError::Unavailable("Qdrant answered a count without a result".into())
        })
    }
}

// ---- Requests: pure functions of the trait's arguments (unit-tested below). ----

/// `key` equals `value` exactly (a keyword match, whatever `value` contains).
fn keyword(key: &str, value: &str) -> Condition {
    field_match(key, MatchValue::Keyword(value.to_owned()))
}

/// `key` equals one of `values`.
fn any_keyword(key: &str, values: Vec<String>) -> Condition {
    field_match(
        key,
        MatchValue::Keywords(RepeatedStrings { strings: values }),
    )
}

fn field_match(key: &str, value: MatchValue) -> Condition {
    Condition::from(FieldCondition {
        key: key.to_owned(),
        r#match: Some(Match {
            match_value: Some(value),
        }),
        ..FieldCondition::default()
    })
}

/// The filter of a search: the tenant always, the kinds, the conversation if given, and a
/// member's visibility (`access`'s rule, clause by clause).
fn search_filter(q: &SearchQuery<'_>) -> Filter {
    let mut kinds: Vec<String> = Vec::with_capacity(q.kinds.len());
    for kind in q.kinds {
        if !kinds.iter().any(|k| k == kind.as_str()) {
            kinds.push(kind.as_str().to_owned());
        }
    }
    let mut must = vec![
        keyword(field::TENANT_ID, q.scope.tenant),
        any_keyword(field::SOURCE_KIND, kinds),
    ];
    if let Some(conversation) = q.conversation_id {
        must.push(keyword(field::CONVERSATION_ID, &conversation.to_string()));
    }
    if let Admission::AnyOf { subject, clauses } = q.scope.admission() {
        let any = clauses.iter().map(|clause| match clause {
            Clause::Knowledge => keyword(field::SOURCE_KIND, SourceKind::Knowledge.as_str()),
            // Of a conversation, with no starter. Only knowledge points are not of a
            // conversation, and `Clause::Knowledge` admits those anyway, so the kind is
            // not tested. Missing or null: `is_null` alone would not match a missing key.
            Clause::OwnerUnknown => Condition::is_empty(field::STARTED_BY),
            Clause::OwnedBySelf => keyword(field::STARTED_BY, subject),
        });
        must.push(Condition::from(Filter::should(any)));
    }
    Filter::must(must)
}

/// Every point of one source of a tenant.
fn source_filter(tenant_id: &str, kind: SourceKind, source_id: Uuid) -> Filter {
    Filter::must([
        keyword(field::TENANT_ID, tenant_id),
        keyword(field::SOURCE_KIND, kind.as_str()),
        keyword(field::SOURCE_ID, &source_id.to_string()),
    ])
}

/// The points that carry a conversation's title: its messages.
fn title_filter(tenant_id: &str, conversation_id: Uuid) -> Filter {
    Filter::must([
        keyword(field::TENANT_ID, tenant_id),
        keyword(field::CONVERSATION_ID, &conversation_id.to_string()),
        keyword(field::SOURCE_KIND, SourceKind::Message.as_str()),
    ])
}

// ---- Payload conversions. ----

fn to_qdrant_payload(p: &Payload) -> HashMap<String, Value> {
    let mut map = HashMap::with_capacity(10);
    let mut put = |key: &str, value: Value| {
        map.insert(key.to_owned(), value);
    };
    put(field::TENANT_ID, Value::from(p.tenant_id.as_str()));
    put(field::SOURCE_KIND, Value::from(p.source_kind.as_str()));
    put(field::SOURCE_ID, Value::from(p.source_id.to_string()));
    if let Some(conversation) = p.conversation_id {
        put(
            field::CONVERSATION_ID,
            Value::from(conversation.to_string()),
        );
    }
    if let Some(started_by) = &p.started_by {
        put(field::STARTED_BY, Value::from(started_by.as_str()));
    }
    put(field::TITLE, Value::from(p.title.as_str()));
    put(field::EVENT_ID, Value::from(p.event_id.to_string()));
    put(field::POSITION, Value::from(p.position));
    put(field::CHUNK, Value::from(i64::from(p.chunk)));
    put(field::TEXT, Value::from(p.text.as_str()));
    map
}

fn from_qdrant_payload(map: &HashMap<String, Value>) -> Result<Payload, String> {
    let kind = |key: &str| map.get(key).and_then(|v| v.kind.as_ref());
    let string = |key: &str| match kind(key) {
        Some(Kind::StringValue(s)) => Ok(s.clone()),
        other => Err(format!("{key} is not a string: {other:?}")),
    };
    let optional_string = |key: &str| match kind(key) {
        None | Some(Kind::NullValue(_)) => Ok(None),
        Some(Kind::StringValue(s)) => Ok(Some(s.clone())),
        other => Err(format!("{key} is not a string: {other:?}")),
    };
    let uuid = |key: &str, s: String| Uuid::parse_str(&s).map_err(|e| format!("{key}: {e}"));
    let integer = |key: &str| match kind(key) {
        Some(Kind::IntegerValue(i)) => Ok(*i),
        other => Err(format!("{key} is not an integer: {other:?}")),
    };
    let source_kind = string(field::SOURCE_KIND)?;
    Ok(Payload {
        tenant_id: string(field::TENANT_ID)?,
        source_kind: SourceKind::parse(&source_kind)
            .ok_or_else(|| format!("unknown source_kind {source_kind:?}"))?,
        source_id: uuid(field::SOURCE_ID, string(field::SOURCE_ID)?)?,
        conversation_id: optional_string(field::CONVERSATION_ID)?
            .map(|s| uuid(field::CONVERSATION_ID, s))
            .transpose()?,
        started_by: optional_string(field::STARTED_BY)?,
        title: string(field::TITLE)?,
        event_id: uuid(field::EVENT_ID, string(field::EVENT_ID)?)?,
        position: integer(field::POSITION)?,
        chunk: i32::try_from(integer(field::CHUNK)?).map_err(|e| format!("chunk: {e}"))?,
        text: string(field::TEXT)?,
    })
}

/// A found point, or `None` (with a warning) if it is not one this store wrote.
fn hit_from(point: ScoredPoint) -> Option<Hit> {
    let id = match point.id.and_then(|id| id.point_id_options) {
        Some(PointIdOptions::Uuid(s)) => Uuid::parse_str(&s).ok(),
        _ => None,
    };
    let Some(id) = id else {
        tracing::warn!("a Qdrant point without a UUID id is skipped");
        return None;
    };
    match from_qdrant_payload(&point.payload) {
        Ok(payload) => Some(Hit {
            id,
            score: point.score,
            payload,
        }),
        Err(reason) => {
            tracing::warn!(%id, %reason, "a Qdrant point with an unreadable payload is skipped");
            None
        }
    }
}

// ---- Errors. ----

fn code_of(e: &QdrantError) -> Option<Code> {
    match e {
        QdrantError::ResponseError { status }
        | QdrantError::ResourceExhaustedError { status, .. } => Some(status.code()),
        _ => None,
    }
}

/// Whether creating a collection failed because it exists (`AlreadyExists` from current
/// servers, `InvalidArgument` "... already exists!" from older ones).
fn already_exists(e: &QdrantError) -> bool {
    match e {
        QdrantError::ResponseError { status } => {
            status.code() == Code::AlreadyExists
                || (status.code() == Code::InvalidArgument
                    && status.message().contains("already exists"))
        }
        _ => false,
    }
}

fn client_error(e: QdrantError, index: &IndexName) -> VectorError {
    match &e {
        QdrantError::ResponseError { status }
        | QdrantError::ResourceExhaustedError { status, .. } => status_error(status, Some(index)),
        QdrantError::Io(_) => VectorError::Unavailable(e.to_string()),
        other => VectorError::Rejected(other.to_string()),
    }
}

/// What a gRPC status means for the caller.
fn status_error(status: &Status, index: Option<&IndexName>) -> VectorError {
    let message = format!("Qdrant: {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::NotFound => match index {
            Some(index) => VectorError::NoIndex(index.clone()),
            None => VectorError::Rejected(message),
        },
        // The client reports a failed connection as `Internal`; `Internal` from the server
        // is its own failure. Neither is the request's fault: retry.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Cancelled
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::DataLoss
        // Writes locked, or a precondition the server will meet again later.
        | Code::FailedPrecondition
        // A wrong or missing API key: a configuration to fix, not points to drop.
        | Code::Unauthenticated
        | Code::PermissionDenied => VectorError::Unavailable(message),
        Code::Ok
        | Code::InvalidArgument
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::Unimplemented => VectorError::Rejected(message),
    }
}

#[cfg(test)]
mod tests {
    use access::{Reach, Scope};
    use qdrant_client::qdrant::condition::ConditionOneOf;
    use qdrant_client::qdrant::{IsEmptyCondition, PointId};

    use super::*;

    fn payload() -> Payload {
        Payload {
            tenant_id: "acme corp".into(),
            source_kind: SourceKind::Message,
            source_id: Uuid::from_u128(1),
            conversation_id: Some(Uuid::from_u128(2)),
            started_by: Some("ann".into()),
            title: "Plans".into(),
            event_id: Uuid::from_u128(3),
            position: i64::MAX,
            chunk: 7,
            text: "some words".into(),
        }
    }

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    /// `key` matches exactly `value`, written out as the gRPC message.
    fn exact(key: &str, value: &str) -> Condition {
        Condition {
            condition_one_of: Some(ConditionOneOf::Field(FieldCondition {
                key: key.into(),
                r#match: Some(Match {
                    match_value: Some(MatchValue::Keyword(value.into())),
                }),
                ..FieldCondition::default()
            })),
        }
    }

    fn one_of(key: &str, values: &[&str]) -> Condition {
        Condition {
            condition_one_of: Some(ConditionOneOf::Field(FieldCondition {
                key: key.into(),
                r#match: Some(Match {
                    match_value: Some(MatchValue::Keywords(RepeatedStrings {
                        strings: values.iter().map(|s| s.to_string()).collect(),
                    })),
                }),
                ..FieldCondition::default()
            })),
        }
    }

    fn visibility(subject: &str) -> Condition {
        Condition {
            condition_one_of: Some(ConditionOneOf::Filter(Filter {
                should: vec![
                    exact("source_kind", "knowledge"),
                    Condition {
                        condition_one_of: Some(ConditionOneOf::IsEmpty(IsEmptyCondition {
                            key: "started_by".into(),
                        })),
                    },
                    exact("started_by", subject),
                ],
                ..Filter::default()
            })),
        }
    }

    fn all(must: Vec<Condition>) -> Filter {
        Filter {
            must,
            ..Filter::default()
        }
    }

    #[test]
    fn payloads_round_trip_with_typed_values() {
        let p = payload();
        let map = to_qdrant_payload(&p);
        assert_eq!(
            map["source_id"],
            string("00000000-0000-0000-0000-000000000001")
        );
        assert_eq!(map["source_kind"], string("message"));
        assert_eq!(map["position"].kind, Some(Kind::IntegerValue(i64::MAX)));
        assert_eq!(map["chunk"].kind, Some(Kind::IntegerValue(7)));
        assert_eq!(map.len(), 10);
        assert_eq!(from_qdrant_payload(&map), Ok(p.clone()));

        let knowledge = Payload {
            source_kind: SourceKind::Knowledge,
            conversation_id: None,
            started_by: None,
            ..p
        };
        let map = to_qdrant_payload(&knowledge);
        assert!(!map.contains_key("conversation_id") && !map.contains_key("started_by"));
        assert_eq!(from_qdrant_payload(&map), Ok(knowledge.clone()));

        // Null (as another writer may store it) reads as absent.
        let mut with_nulls = map;
        let null = Value {
            kind: Some(Kind::NullValue(0)),
        };
        with_nulls.insert("started_by".into(), null.clone());
        with_nulls.insert("conversation_id".into(), null);
        assert_eq!(from_qdrant_payload(&with_nulls), Ok(knowledge));
    }

    #[test]
    fn unreadable_payloads_are_errors_not_panics() {
        let good = to_qdrant_payload(&payload());
        let spoil = |key: &str, value: Option<Value>| {
            let mut map = good.clone();
            match value {
                Some(v) => map.insert(key.into(), v),
                None => map.remove(key),
            };
            from_qdrant_payload(&map)
        };
        assert!(spoil("tenant_id", None).is_err());
        assert!(spoil("source_kind", Some(string("email"))).is_err());
        assert!(spoil("source_id", Some(string("not-a-uuid"))).is_err());
        assert!(spoil("conversation_id", Some(string("nope"))).is_err());
        assert!(spoil("position", Some(string("1"))).is_err());
        assert!(spoil("chunk", Some(Value::from(i64::from(i32::MAX) + 1))).is_err());
        assert!(spoil("text", Some(Value::from(1.5))).is_err());
        assert!(spoil("started_by", Some(Value::from(true))).is_err());
    }

    #[test]
    fn hits_need_a_uuid_id_and_a_readable_payload() {
        let id = Uuid::from_u128(9);
        let point = |id: PointId, payload: HashMap<String, Value>| ScoredPoint {
            id: Some(id),
            payload,
            score: 0.5,
            ..ScoredPoint::default()
        };
        let good = to_qdrant_payload(&payload());
        let hit = hit_from(point(PointId::from(id.to_string()), good.clone()));
        assert_eq!(
            hit,
            Some(Hit {
                id,
                score: 0.5,
                payload: payload()
            })
        );
        assert_eq!(hit_from(point(PointId::from(5u64), good)), None);
        assert_eq!(
            hit_from(point(PointId::from(id.to_string()), HashMap::new())),
            None
        );
        assert_eq!(
            hit_from(ScoredPoint {
                id: None,
                ..ScoredPoint::default()
            }),
            None
        );
    }

    fn query<'a>(kinds: &'a [SourceKind]) -> SearchQuery<'a> {
        SearchQuery {
            scope: Scope::new("acme corp", "admin", Reach::Tenant),
            vector: &[1.0, 0.0],
            kinds,
            conversation_id: None,
            limit: 5,
            min_score: None,
        }
    }

    #[test]
    fn an_admin_search_is_scoped_to_the_tenant_and_kinds() {
        let q = query(&SourceKind::ALL);
        assert_eq!(
            search_filter(&q),
            all(vec![
                exact("tenant_id", "acme corp"),
                one_of("source_kind", &["message", "document", "knowledge"]),
            ])
        );
        // Duplicated kinds are sent once.
        let kinds = [SourceKind::Document, SourceKind::Document];
        assert_eq!(
            search_filter(&query(&kinds)),
            all(vec![
                exact("tenant_id", "acme corp"),
                one_of("source_kind", &["document"]),
            ])
        );
    }

    #[test]
    fn a_conversation_search_adds_the_conversation() {
        let conversation = Uuid::from_u128(42);
        let q = SearchQuery {
            conversation_id: Some(conversation),
            ..query(&[SourceKind::Message])
        };
        assert_eq!(
            search_filter(&q),
            all(vec![
                exact("tenant_id", "acme corp"),
                one_of("source_kind", &["message"]),
                exact("conversation_id", &conversation.to_string()),
            ])
        );
    }

    #[test]
    fn a_member_search_adds_the_visibility_rule() {
        let q = SearchQuery {
            scope: Scope::new("acme corp", "ann smith", Reach::Own),
            ..query(&[SourceKind::Message, SourceKind::Knowledge])
        };
        assert_eq!(
            search_filter(&q),
            all(vec![
                exact("tenant_id", "acme corp"),
                one_of("source_kind", &["message", "knowledge"]),
                visibility("ann smith"),
            ])
        );
        let conversation = Uuid::from_u128(7);
        let both = SearchQuery {
            conversation_id: Some(conversation),
            ..q
        };
        assert_eq!(
            search_filter(&both),
            all(vec![
                exact("tenant_id", "acme corp"),
                one_of("source_kind", &["message", "knowledge"]),
                exact("conversation_id", &conversation.to_string()),
                visibility("ann smith"),
            ])
        );
    }

    #[test]
    fn writes_are_scoped_to_the_tenant() {
        let source = Uuid::from_u128(5);
        assert_eq!(
            source_filter("acme", SourceKind::Document, source),
            all(vec![
                exact("tenant_id", "acme"),
                exact("source_kind", "document"),
                exact("source_id", &source.to_string()),
            ])
        );
        let conversation = Uuid::from_u128(6);
        assert_eq!(
            title_filter("acme", conversation),
            all(vec![
                exact("tenant_id", "acme"),
                exact("conversation_id", &conversation.to_string()),
                exact("source_kind", "message"),
            ])
        );
    }

    #[test]
    fn statuses_map_to_retry_refuse_or_no_index() {
        let index = IndexName::new("g1").expect("a valid name");
        let map = |code| status_error(&Status::new(code, "x"), Some(&index));
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Cancelled,
            Code::Internal,
            Code::Unauthenticated,
        ] {
            assert!(matches!(map(code), VectorError::Unavailable(_)), "{code:?}");
        }
        for code in [Code::InvalidArgument, Code::AlreadyExists, Code::OutOfRange] {
            assert!(matches!(map(code), VectorError::Rejected(_)), "{code:?}");
        }
        assert_eq!(map(Code::NotFound), VectorError::NoIndex(index));
        let exists = |code, message: &str| {
            already_exists(&QdrantError::ResponseError {
                status: Status::new(code, message),
            })
        };
        assert!(exists(
            Code::AlreadyExists,
            "Collection `x` already exists!"
        ));
        assert!(exists(
            Code::InvalidArgument,
            "Wrong input: Collection `x` already exists!"
        ));
        assert!(!exists(
            Code::InvalidArgument,
            "Wrong input: bad vector size"
        ));
    }

    #[test]
    fn prefixes_are_plain() {
        assert!(check_prefix("threadline_").is_ok());
        assert!(check_prefix("").is_ok());
        for bad in ["a/b", "a b", "ü", &"a".repeat(65)] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
