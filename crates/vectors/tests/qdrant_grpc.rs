//! The Qdrant store against an in-process fake of Qdrant's gRPC services, over real gRPC on
//! a loopback port (no Qdrant server can be installed on the development machines).
//!
//! The fake implements only the RPCs the store calls, on the service traits generated in
//! `qdrant-client` (the same protobuf the real server speaks). It keeps points in memory
//! and evaluates the filters it is sent with Qdrant's documented semantics (checked
//! against Qdrant's `query_checker.rs` / `check_is_empty` / `check_is_null`):
//!
//! * `must`: all hold; `should`: at least one holds when there is any; `must_not`: none holds;
//! * a keyword match holds when the key holds that string (or, for an array, any element
//!   does); it never holds for a missing key;
//! * `is_empty` holds when the key is missing, `null` or `[]`;
//! * `is_null` holds only when the key is present and `null` (not when it is missing).
//!
//! Anything else it is sent (a full-text match, ranges, prefetch, ...) is answered
//! `Unimplemented`, so a request the fake does not understand fails the test instead of
//! passing by accident. Like Qdrant it checks vector dimensions, normalises vectors of a
//! cosine collection, refuses `limit` 0, returns payloads only when asked, keeps only the
//! scores above `score_threshold` (not equal to it), resolves aliases, applies the actions
//! of an alias change one by one without rollback, drops a collection's aliases with it
//! and checks the API key: what Qdrant 1.19.0 was seen to do (issue 28).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use access::{Reach, Scope};
// The generated messages; its modules `vectors` and `qdrant_client` are named through `pb`.
use ::qdrant_client::qdrant as pb;
use ::qdrant_client::qdrant::*;
use ::vectors::qdrant::{QdrantConfig, QdrantStore};
use ::vectors::{
    Hit, IndexName, Payload, Point, SearchQuery, SourceKind, VectorError, VectorStore,
};
use pb::collections_server::{Collections, CollectionsServer};
use pb::condition::ConditionOneOf;
use pb::r#match::MatchValue;
use pb::point_id::PointIdOptions;
use pb::points_selector::PointsSelectorOneOf;
use pb::points_server::{Points, PointsServer};
use pb::value::Kind;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// The fake server.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct StoredPoint {
    vector: Vec<f32>,
    payload: HashMap<String, Value>,
}

#[derive(Debug, Clone)]
struct Collection {
    dimension: u64,
    /// By canonical id (a UUID's hyphenated lowercase form, or a number).
    points: BTreeMap<String, StoredPoint>,
    /// Payload indexes: field type and parameters.
    field_indexes: BTreeMap<String, (i32, Option<PayloadIndexParams>)>,
}

#[derive(Debug, Default)]
struct State {
    collections: BTreeMap<String, Collection>,
    aliases: BTreeMap<String, String>,
    /// Writes sent without `wait = true` (they would not be visible at once on a real
    /// server; the store must wait for every write).
    unwaited_writes: Vec<&'static str>,
    /// Answer the next collection-info request `NotFound` (another writer creating the
    /// collection concurrently).
    hide_next_info: bool,
    /// Every RPC received, by name.
    calls: Vec<&'static str>,
}

#[derive(Clone, Default)]
struct Fake {
    state: Arc<Mutex<State>>,
}

impl Fake {
    fn lock(&self, call: &'static str) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.calls.push(call);
        state
    }
}

impl State {
    /// The collection a name (or an alias) stands for.
    fn resolve(&self, name: &str) -> Result<String, Status> {
        if self.collections.contains_key(name) {
            return Ok(name.to_owned());
        }
        self.aliases
            .get(name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("Collection `{name}` doesn't exist!")))
    }

    fn collection(&mut self, name: &str) -> Result<&mut Collection, Status> {
        let name = self.resolve(name)?;
        self.collections
            .get_mut(&name)
            .ok_or_else(|| Status::not_found(format!("Collection `{name}` doesn't exist!")))
    }

    fn note_wait(&mut self, call: &'static str, wait: Option<bool>) {
        if wait != Some(true) {
            self.unwaited_writes.push(call);
        }
    }
}

fn done() -> PointsOperationResponse {
    PointsOperationResponse {
        result: Some(UpdateResult {
            operation_id: Some(1),
            status: UpdateStatus::Completed as i32,
        }),
        ..Default::default()
    }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        v.to_vec()
    } else {
        v.iter().map(|x| x / norm).collect()
    }
}

fn canonical_id(id: Option<&PointId>) -> Result<String, Status> {
    match id.and_then(|id| id.point_id_options.as_ref()) {
        Some(PointIdOptions::Num(n)) => Ok(n.to_string()),
        Some(PointIdOptions::Uuid(s)) => Uuid::parse_str(s)
            .map(|u| u.to_string())
            .map_err(|e| Status::invalid_argument(format!("Unable to parse UUID: {s}: {e}"))),
        None => Err(Status::invalid_argument("point without an id")),
    }
}

fn point_id(canonical: &str) -> PointId {
    match canonical.parse::<u64>() {
        Ok(n) => PointId::from(n),
        Err(_) => PointId::from(canonical.to_owned()),
    }
}

fn dense(vectors: Option<&Vectors>) -> Result<Vec<f32>, Status> {
    #[allow(deprecated)]
    match vectors.and_then(|v| v.vectors_options.as_ref()) {
        Some(pb::vectors::VectorsOptions::Vector(v)) => match &v.vector {
            Some(pb::vector::Vector::Dense(d)) => Ok(d.data.clone()),
            None if !v.data.is_empty() => Ok(v.data.clone()),
            _ => Err(Status::unimplemented("fake: only dense vectors")),
        },
        _ => Err(Status::unimplemented("fake: only one unnamed vector")),
    }
}

fn check_dimension(collection: &Collection, got: usize) -> Result<(), Status> {
    if got as u64 == collection.dimension {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "Wrong input: Vector dimension error: expected dim: {}, got {got}",
            collection.dimension
        )))
    }
}

/// The string values at `key` (an array's elements, flattened).
fn strings(payload: &HashMap<String, Value>, key: &str) -> Vec<String> {
    match payload.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => vec![s.clone()],
        Some(Kind::ListValue(list)) => list
            .values
            .iter()
            .filter_map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn is_empty(payload: &HashMap<String, Value>, key: &str) -> bool {
    match payload.get(key).map(|v| v.kind.as_ref()) {
        None | Some(None) | Some(Some(Kind::NullValue(_))) => true,
        Some(Some(Kind::ListValue(list))) => list.values.is_empty(),
        Some(Some(_)) => false,
    }
}

fn is_null(payload: &HashMap<String, Value>, key: &str) -> bool {
    matches!(
        payload.get(key).map(|v| v.kind.as_ref()),
        Some(Some(Kind::NullValue(_)))
    )
}

fn check_filter(filter: &Filter, payload: &HashMap<String, Value>) -> Result<bool, Status> {
    if filter.min_should.is_some() {
        return Err(Status::unimplemented("fake: min_should"));
    }
    for condition in &filter.must {
        if !check_condition(condition, payload)? {
            return Ok(false);
        }
    }
    for condition in &filter.must_not {
        if check_condition(condition, payload)? {
            return Ok(false);
        }
    }
    if filter.should.is_empty() {
        return Ok(true);
    }
    for condition in &filter.should {
        if check_condition(condition, payload)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn check_condition(
    condition: &Condition,
    payload: &HashMap<String, Value>,
) -> Result<bool, Status> {
    match &condition.condition_one_of {
        Some(ConditionOneOf::Filter(filter)) => check_filter(filter, payload),
        Some(ConditionOneOf::IsEmpty(c)) => Ok(is_empty(payload, &c.key)),
        Some(ConditionOneOf::IsNull(c)) => Ok(is_null(payload, &c.key)),
        Some(ConditionOneOf::Field(f)) => {
            let unsupported = f.range.is_some()
                || f.geo_bounding_box.is_some()
                || f.geo_radius.is_some()
                || f.geo_polygon.is_some()
                || f.values_count.is_some()
                || f.datetime_range.is_some();
            if unsupported {
                return Err(Status::unimplemented(
                    "fake: only match, is_empty and is_null",
                ));
            }
            if f.is_empty == Some(true) {
                return Ok(is_empty(payload, &f.key));
            }
            if f.is_null == Some(true) {
                return Ok(is_null(payload, &f.key));
            }
            let values = strings(payload, &f.key);
            match f.r#match.as_ref().and_then(|m| m.match_value.as_ref()) {
                Some(MatchValue::Keyword(k)) => Ok(values.iter().any(|v| v == k)),
                Some(MatchValue::Keywords(ks)) => Ok(values.iter().any(|v| ks.strings.contains(v))),
                Some(MatchValue::ExceptKeywords(ks)) => {
                    Ok(!values.is_empty() && values.iter().all(|v| !ks.strings.contains(v)))
                }
                other => Err(Status::unimplemented(format!(
                    "fake: a {other:?} match (only keyword matches)"
                ))),
            }
        }
        other => Err(Status::unimplemented(format!("fake: condition {other:?}"))),
    }
}

/// The ids a selector picks in `collection`.
fn select(
    collection: &Collection,
    selector: Option<&PointsSelector>,
) -> Result<Vec<String>, Status> {
    match selector.and_then(|s| s.points_selector_one_of.as_ref()) {
        Some(PointsSelectorOneOf::Points(list)) => {
            list.ids.iter().map(|id| canonical_id(Some(id))).collect()
        }
        Some(PointsSelectorOneOf::Filter(filter)) => {
            let mut ids = Vec::new();
            for (id, point) in &collection.points {
                if check_filter(filter, &point.payload)? {
                    ids.push(id.clone());
                }
            }
            Ok(ids)
        }
        None => Err(Status::invalid_argument("no points selector")),
    }
}

/// The RPCs the store never calls: a call is a test failure.
macro_rules! fake_service {
    ($service:ident for $fake:ty { $($real:tt)* } unimplemented { $($name:ident($req:ident) -> $resp:ident;)* }) => {
        #[tonic::async_trait]
        impl $service for $fake {
            $($real)*
            $(
                async fn $name(&self, _: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(Status::unimplemented(concat!("fake: ", stringify!($name))))
                }
            )*
        }
    };
}

fake_service! { Collections for Fake {
    async fn get(
        &self,
        request: Request<GetCollectionInfoRequest>,
    ) -> Result<Response<GetCollectionInfoResponse>, Status> {
        let mut state = self.lock("collections.get");
        let name = request.into_inner().collection_name;
        if std::mem::take(&mut state.hide_next_info) {
            return Err(Status::not_found(format!("Collection `{name}` doesn't exist!")));
        }
        let collection = state.collection(&name)?;
        let payload_schema = collection
            .field_indexes
            .iter()
            .map(|(key, (data_type, params))| {
                let info = PayloadSchemaInfo {
                    data_type: *data_type,
                    params: params.clone(),
                    points: None,
                };
                (key.clone(), info)
            })
            .collect();
        let params = CollectionParams {
            vectors_config: Some(VectorsConfig {
                config: Some(vectors_config::Config::Params(VectorParams {
                    size: collection.dimension,
                    distance: Distance::Cosine as i32,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        Ok(Response::new(GetCollectionInfoResponse {
            result: Some(CollectionInfo {
                status: CollectionStatus::Green as i32,
                points_count: Some(collection.points.len() as u64),
                config: Some(CollectionConfig {
                    params: Some(params),
                    ..Default::default()
                }),
                payload_schema,
                ..Default::default()
            }),
            time: 0.0,
        }))
    }

    async fn create(
        &self,
        request: Request<CreateCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        let mut state = self.lock("collections.create");
        let request = request.into_inner();
        let name = request.collection_name;
        if name.is_empty() || name.contains('/') || name.len() > 255 {
            return Err(Status::invalid_argument(format!("Wrong input: bad collection name {name:?}")));
        }
        if state.collections.contains_key(&name) || state.aliases.contains_key(&name) {
            return Err(Status::already_exists(format!("Collection `{name}` already exists!")));
        }
        let params = match request.vectors_config.and_then(|c| c.config) {
            Some(vectors_config::Config::Params(params)) => params,
            _ => return Err(Status::unimplemented("fake: one unnamed vector per collection")),
        };
        if params.size == 0 {
            return Err(Status::invalid_argument("Wrong input: vector size must be positive"));
        }
        if params.distance != Distance::Cosine as i32 {
            return Err(Status::unimplemented("fake: cosine distance only"));
        }
        let collection = Collection {
            dimension: params.size,
            points: BTreeMap::new(),
            field_indexes: BTreeMap::new(),
        };
        state.collections.insert(name, collection);
        Ok(Response::new(CollectionOperationResponse { result: true, time: 0.0 }))
    }

    async fn delete(
        &self,
        request: Request<DeleteCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        let mut state = self.lock("collections.delete");
        let name = request.into_inner().collection_name;
        let existed = state.collections.remove(&name).is_some();
        // A collection's aliases go with it.
        state.aliases.retain(|_, target| *target != name);
        Ok(Response::new(CollectionOperationResponse { result: existed, time: 0.0 }))
    }

    async fn update_aliases(
        &self,
        request: Request<ChangeAliases>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        let mut state = self.lock("collections.update_aliases");
        // One action after the other, without rollback, as Qdrant 1.19 does: a failing
        // action leaves the earlier ones applied.
        for operation in request.into_inner().actions {
            match operation.action {
                Some(alias_operations::Action::DeleteAlias(d)) => {
                    state.aliases.remove(&d.alias_name);
                }
                Some(alias_operations::Action::CreateAlias(c)) => {
                    if !state.collections.contains_key(&c.collection_name) {
                        return Err(Status::not_found(format!(
                            "Collection `{}` doesn't exist!",
                            c.collection_name
                        )));
                    }
                    if state.collections.contains_key(&c.alias_name) || state.aliases.contains_key(&c.alias_name) {
                        return Err(Status::already_exists(format!(
                            "Alias `{}` already exists!",
                            c.alias_name
                        )));
                    }
                    state.aliases.insert(c.alias_name, c.collection_name);
                }
                other => return Err(Status::unimplemented(format!("fake: alias action {other:?}"))),
            }
        }
        Ok(Response::new(CollectionOperationResponse { result: true, time: 0.0 }))
    }

    async fn list_aliases(
        &self,
        _: Request<ListAliasesRequest>,
    ) -> Result<Response<ListAliasesResponse>, Status> {
        let state = self.lock("collections.list_aliases");
        let aliases = state
            .aliases
            .iter()
            .map(|(alias_name, collection_name)| AliasDescription {
                alias_name: alias_name.clone(),
                collection_name: collection_name.clone(),
            })
            .collect();
        Ok(Response::new(ListAliasesResponse { aliases, time: 0.0 }))
    }
} unimplemented {
    list(ListCollectionsRequest) -> ListCollectionsResponse;
    update(UpdateCollection) -> CollectionOperationResponse;
    list_collection_aliases(ListCollectionAliasesRequest) -> ListAliasesResponse;
    collection_cluster_info(CollectionClusterInfoRequest) -> CollectionClusterInfoResponse;
    collection_exists(CollectionExistsRequest) -> CollectionExistsResponse;
    update_collection_cluster_setup(UpdateCollectionClusterSetupRequest) -> UpdateCollectionClusterSetupResponse;
    create_shard_key(CreateShardKeyRequest) -> CreateShardKeyResponse;
    delete_shard_key(DeleteShardKeyRequest) -> DeleteShardKeyResponse;
    list_shard_keys(ListShardKeysRequest) -> ListShardKeysResponse;
}}

fake_service! { Points for Fake {
    async fn upsert(
        &self,
        request: Request<UpsertPoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        let mut state = self.lock("points.upsert");
        let request = request.into_inner();
        if request.update_filter.is_some() {
            return Err(Status::unimplemented("fake: conditional upserts"));
        }
        state.note_wait("upsert", request.wait);
        let collection = state.collection(&request.collection_name)?;
        // Validate the whole batch before writing any of it.
        let mut batch = Vec::with_capacity(request.points.len());
        for point in request.points {
            let id = canonical_id(point.id.as_ref())?;
            let vector = dense(point.vectors.as_ref())?;
            check_dimension(collection, vector.len())?;
            batch.push((id, StoredPoint { vector: unit(&vector), payload: point.payload }));
        }
        collection.points.extend(batch);
        Ok(Response::new(done()))
    }

    async fn delete(
        &self,
        request: Request<DeletePoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        let mut state = self.lock("points.delete");
        let request = request.into_inner();
        state.note_wait("delete", request.wait);
        let collection = state.collection(&request.collection_name)?;
        for id in select(collection, request.points.as_ref())? {
            collection.points.remove(&id);
        }
        Ok(Response::new(done()))
    }

    async fn set_payload(
        &self,
        request: Request<SetPayloadPoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        let mut state = self.lock("points.set_payload");
        let request = request.into_inner();
        if request.key.is_some() {
            return Err(Status::unimplemented("fake: set_payload at a key"));
        }
        state.note_wait("set_payload", request.wait);
        let collection = state.collection(&request.collection_name)?;
        for id in select(collection, request.points_selector.as_ref())? {
            if let Some(point) = collection.points.get_mut(&id) {
                point.payload.extend(request.payload.clone());
            }
        }
        Ok(Response::new(done()))
    }

    async fn create_field_index(
        &self,
        request: Request<CreateFieldIndexCollection>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        let mut state = self.lock("points.create_field_index");
        let request = request.into_inner();
        state.note_wait("create_field_index", request.wait);
        let collection = state.collection(&request.collection_name)?;
        let field_type = request
            .field_type
            .ok_or_else(|| Status::invalid_argument("field_type is required"))?;
        collection
            .field_indexes
            .insert(request.field_name, (field_type, request.field_index_params));
        Ok(Response::new(done()))
    }

    async fn query(
        &self,
        request: Request<QueryPoints>,
    ) -> Result<Response<QueryResponse>, Status> {
        let mut state = self.lock("points.query");
        let request = request.into_inner();
        if !request.prefetch.is_empty() || request.using.is_some() || request.offset.is_some() {
            return Err(Status::unimplemented("fake: prefetch, using, offset"));
        }
        let collection = state.collection(&request.collection_name)?;
        let query = match request.query.and_then(|q| q.variant) {
            Some(query::Variant::Nearest(VectorInput {
                variant: Some(vector_input::Variant::Dense(d)),
            })) => d.data,
            other => return Err(Status::unimplemented(format!("fake: query {other:?}"))),
        };
        check_dimension(collection, query.len())?;
        let limit = request.limit.unwrap_or(10);
        if limit == 0 {
            return Err(Status::invalid_argument("Validation error in body: limit must be at least 1"));
        }
        let with_payload = match request.with_payload.and_then(|w| w.selector_options) {
            None | Some(with_payload_selector::SelectorOptions::Enable(false)) => false,
            Some(with_payload_selector::SelectorOptions::Enable(true)) => true,
            Some(other) => return Err(Status::unimplemented(format!("fake: {other:?}"))),
        };
        let query = unit(&query);
        let mut scored = Vec::new();
        for (id, point) in &collection.points {
            if let Some(filter) = &request.filter
                && !check_filter(filter, &point.payload)?
            {
                continue;
            }
            let score: f32 = query.iter().zip(&point.vector).map(|(a, b)| a * b).sum();
            // Qdrant keeps scores above the threshold, not equal to it.
            if request.score_threshold.is_some_and(|min| score <= min) {
                continue;
            }
            scored.push((score, id.clone(), point));
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let result = scored
            .into_iter()
            .take(limit as usize)
            .map(|(score, id, point)| ScoredPoint {
                id: Some(point_id(&id)),
                payload: if with_payload { point.payload.clone() } else { HashMap::new() },
                score,
                version: 1,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(QueryResponse { result, time: 0.0, usage: None }))
    }

    async fn count(
        &self,
        request: Request<CountPoints>,
    ) -> Result<Response<CountResponse>, Status> {
        let mut state = self.lock("points.count");
        let request = request.into_inner();
        let collection = state.collection(&request.collection_name)?;
        let mut count = 0;
        for point in collection.points.values() {
            let counted = match &request.filter {
                Some(filter) => check_filter(filter, &point.payload)?,
                None => true,
            };
            count += u64::from(counted);
        }
        Ok(Response::new(CountResponse {
            result: Some(CountResult { count }),
            time: 0.0,
            usage: None,
        }))
    }
} unimplemented {
    get(GetPoints) -> GetResponse;
    update_vectors(UpdatePointVectors) -> PointsOperationResponse;
    delete_vectors(DeletePointVectors) -> PointsOperationResponse;
    overwrite_payload(SetPayloadPoints) -> PointsOperationResponse;
    delete_payload(DeletePayloadPoints) -> PointsOperationResponse;
    clear_payload(ClearPayloadPoints) -> PointsOperationResponse;
    delete_field_index(DeleteFieldIndexCollection) -> PointsOperationResponse;
    create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse;
    delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse;
    search(SearchPoints) -> SearchResponse;
    search_batch(SearchBatchPoints) -> SearchBatchResponse;
    search_groups(SearchPointGroups) -> SearchGroupsResponse;
    scroll(ScrollPoints) -> ScrollResponse;
    recommend(RecommendPoints) -> RecommendResponse;
    recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse;
    recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse;
    discover(DiscoverPoints) -> DiscoverResponse;
    discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse;
    update_batch(UpdateBatchPoints) -> UpdateBatchResponse;
    query_batch(QueryBatchPoints) -> QueryBatchResponse;
    query_groups(QueryPointGroups) -> QueryGroupsResponse;
    facet(FacetCounts) -> FacetResponse;
    search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse;
    search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse;
}}

const API_KEY: &str = "test-key";

/// Like a Qdrant configured with an API key: every request must carry it.
fn check_api_key(request: Request<()>) -> Result<Request<()>, Status> {
    match request.metadata().get("api-key").map(|v| v.to_str()) {
        Some(Ok(API_KEY)) => Ok(request),
        _ => Err(Status::unauthenticated("Invalid API key or JWT")),
    }
}

/// A running fake on a loopback port.
struct Running {
    addr: SocketAddr,
    fake: Fake,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Running {
    async fn start() -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let fake = Fake::default();
        let router = Server::builder()
            .add_service(CollectionsServer::with_interceptor(
                fake.clone(),
                check_api_key,
            ))
            .add_service(PointsServer::with_interceptor(fake.clone(), check_api_key));
        let server = tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
            {
                eprintln!("the fake Qdrant stopped: {e}");
            }
        });
        Running { addr, fake, server }
    }

    fn config(&self) -> QdrantConfig {
        QdrantConfig {
            url: format!("http://{}", self.addr),
            api_key: Some(API_KEY.into()),
            collection_prefix: "t_".into(),
            timeout: Duration::from_secs(5),
        }
    }

    async fn store(&self) -> QdrantStore {
        QdrantStore::connect(self.config()).await.expect("a store")
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.fake.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures.
// ---------------------------------------------------------------------------------------

fn index(name: &str) -> IndexName {
    IndexName::new(name).expect("a valid index name")
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn payload(
    tenant: &str,
    kind: SourceKind,
    source: u128,
    conversation: Option<u128>,
    started_by: Option<&str>,
) -> Payload {
    Payload {
        tenant_id: tenant.into(),
        source_kind: kind,
        source_id: id(source),
        conversation_id: conversation.map(id),
        started_by: started_by.map(str::to_owned),
        title: format!("title of {source}"),
        event_id: id(source + 1000),
        position: 3,
        chunk: 0,
        text: format!("text of {source}"),
    }
}

fn point(n: u128, vector: [f32; 3], payload: Payload) -> Point {
    Point {
        id: id(n),
        vector: unit(&vector),
        payload,
    }
}

fn search<'a>(tenant: &'a str, vector: &'a [f32], kinds: &'a [SourceKind]) -> SearchQuery<'a> {
    SearchQuery {
        scope: Scope::new(tenant, "admin", Reach::Tenant),
        vector,
        kinds,
        conversation_id: None,
        limit: 100,
        min_score: None,
    }
}

fn ids(hits: &[Hit]) -> Vec<u128> {
    hits.iter().map(|h| h.id.as_u128()).collect()
}

/// The ids a search finds, in id order.
async fn found(store: &QdrantStore, index: &IndexName, q: SearchQuery<'_>) -> Vec<u128> {
    sorted(ids(&store.search(index, &q).await.expect("search")))
}

fn sorted(mut v: Vec<u128>) -> Vec<u128> {
    v.sort();
    v
}

const ACME: &str = "acme corp";
const GLOBEX: &str = "globex";
const CONV: u128 = 500;

/// Two tenants with the same vectors; in `ACME`: conversation `CONV` started by ann (a
/// message 1, a document 2), a message 3 in a conversation bob started, a message 4 of an
/// unknown starter, and knowledge 5. `GLOBEX` holds the same points as 11..15.
fn corpus() -> Vec<Point> {
    use SourceKind::{Document, Knowledge, Message};
    let v = [1.0, 0.0, 0.0];
    let mut points = Vec::new();
    for (tenant, base) in [(ACME, 0), (GLOBEX, 10)] {
        points.extend([
            point(
                base + 1,
                [1.0, 0.1, 0.0],
                payload(tenant, Message, 101, Some(CONV), Some("ann")),
            ),
            point(
                base + 2,
                [1.0, 0.2, 0.0],
                payload(tenant, Document, 102, Some(CONV), Some("ann")),
            ),
            point(
                base + 3,
                [1.0, 0.3, 0.0],
                payload(tenant, Message, 103, Some(501), Some("bob")),
            ),
            point(
                base + 4,
                [1.0, 0.4, 0.0],
                payload(tenant, Message, 104, Some(502), None),
            ),
            point(base + 5, v, payload(tenant, Knowledge, 105, None, None)),
        ]);
    }
    points
}

async fn store_with_corpus(running: &Running) -> (QdrantStore, IndexName) {
    let store = running.store().await;
    let g1 = index("g1");
    store.create_index(&g1, 3).await.expect("create");
    store.upsert(&g1, &corpus()).await.expect("upsert");
    (store, g1)
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn creating_an_index_is_idempotent_and_refuses_another_dimension() {
    let running = Running::start().await;
    let store = running.store().await;
    let g1 = index("g1");
    store.create_index(&g1, 3).await.expect("create");
    store.create_index(&g1, 3).await.expect("create again");
    match store.create_index(&g1, 4).await {
        Err(VectorError::Rejected(m)) => assert!(m.contains("3 dimensions"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        store.create_index(&index("g0"), 0).await,
        Err(VectorError::Rejected(_))
    ));

    // Lost a race: the collection exists by the time the store creates it.
    let g2 = index("g2");
    store.create_index(&g2, 3).await.expect("create g2");
    running.state().hide_next_info = true;
    store
        .create_index(&g2, 3)
        .await
        .expect("a concurrent create of the same dimension");
    running.state().hide_next_info = true;
    assert!(matches!(
        store.create_index(&g2, 5).await,
        Err(VectorError::Rejected(_))
    ));

    let state = running.state();
    let names: Vec<&String> = state.collections.keys().collect();
    assert_eq!(names, ["t_g1", "t_g2"]);
    let collection = &state.collections["t_g1"];
    assert_eq!(collection.dimension, 3);
    let keys: Vec<&str> = collection
        .field_indexes
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "conversation_id",
            "source_id",
            "source_kind",
            "started_by",
            "tenant_id"
        ]
    );
    for (key, (field_type, params)) in &collection.field_indexes {
        assert_eq!(*field_type, FieldType::Keyword as i32, "{key}");
        let is_tenant = match params.as_ref().and_then(|p| p.index_params.as_ref()) {
            Some(payload_index_params::IndexParams::KeywordIndexParams(k)) => k.is_tenant,
            None => None,
            Some(other) => panic!("{key}: unexpected index params {other:?}"),
        };
        assert_eq!(is_tenant == Some(true), key == "tenant_id", "{key}");
    }
    assert!(
        state.unwaited_writes.is_empty(),
        "{:?}",
        state.unwaited_writes
    );
}

#[tokio::test]
async fn upserts_replace_by_id_and_searches_rank_by_cosine() {
    let running = Running::start().await;
    let (store, g1) = store_with_corpus(&running).await;
    assert_eq!(store.count(&g1, None).await.expect("count"), 10);

    let q = [1.0, 0.0, 0.0];
    let hits = store
        .search(&g1, &search(ACME, &q, &SourceKind::ALL))
        .await
        .expect("search");
    assert_eq!(ids(&hits), [5, 1, 2, 3, 4], "best first");
    assert!((hits[0].score - 1.0).abs() < 1e-5);
    let expected = 1.0 / (1.0f32 + 0.01).sqrt();
    assert!(
        (hits[1].score - expected).abs() < 1e-5,
        "cosine: {}",
        hits[1].score
    );
    assert_eq!(
        hits[1].payload,
        corpus()[0].payload,
        "the payload comes back whole"
    );

    // Limit keeps the best; min_score drops the worse.
    let top2 = SearchQuery {
        limit: 2,
        ..search(ACME, &q, &SourceKind::ALL)
    };
    assert_eq!(
        ids(&store.search(&g1, &top2).await.expect("search")),
        [5, 1]
    );
    let close = SearchQuery {
        min_score: Some(0.97),
        ..search(ACME, &q, &SourceKind::ALL)
    };
    assert_eq!(
        ids(&store.search(&g1, &close).await.expect("search")),
        [5, 1, 2]
    );
    let none = SearchQuery {
        limit: 0,
        ..search(ACME, &q, &SourceKind::ALL)
    };
    assert!(store.search(&g1, &none).await.expect("search").is_empty());

    // Writing point 1 again replaces it: a new vector, a new payload, no second point.
    let mut again = point(
        1,
        [0.0, 1.0, 0.0],
        payload(ACME, SourceKind::Message, 101, Some(CONV), Some("ann")),
    );
    again.payload.text = "edited".into();
    store.upsert(&g1, &[again]).await.expect("upsert again");
    assert_eq!(store.count(&g1, None).await.expect("count"), 10);
    let up = [0.0, 1.0, 0.0];
    let hits = store
        .search(&g1, &search(ACME, &up, &SourceKind::ALL))
        .await
        .expect("search");
    assert_eq!(hits[0].id, id(1));
    assert_eq!(hits[0].payload.text, "edited");

    // A vector of the wrong dimension is refused, for writes and for searches.
    let short = Point {
        vector: vec![1.0, 0.0],
        ..point(99, q, payload(ACME, SourceKind::Message, 1, None, None))
    };
    assert!(matches!(
        store.upsert(&g1, &[short]).await,
        Err(VectorError::Rejected(_))
    ));
    let short_query = search(ACME, &[1.0, 0.0], &SourceKind::ALL);
    assert!(matches!(
        store.search(&g1, &short_query).await,
        Err(VectorError::Rejected(_))
    ));
    assert!(running.state().unwaited_writes.is_empty());
}

#[tokio::test]
async fn many_points_go_in_batches() {
    let running = Running::start().await;
    let store = running.store().await;
    let g1 = index("g1");
    store.create_index(&g1, 3).await.expect("create");
    let points: Vec<Point> = (0..600)
        .map(|n| {
            point(
                n,
                [1.0, n as f32, 0.0],
                payload(ACME, SourceKind::Knowledge, n, None, None),
            )
        })
        .collect();
    store.upsert(&g1, &points).await.expect("upsert");
    assert_eq!(store.count(&g1, Some(ACME)).await.expect("count"), 600);
    let upserts = running
        .state()
        .calls
        .iter()
        .filter(|c| **c == "points.upsert")
        .count();
    assert_eq!(upserts, 3, "600 points in batches of 256");
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_points() {
    let running = Running::start().await;
    let (store, g1) = store_with_corpus(&running).await;
    let q = [1.0, 0.2, 0.0];
    for (tenant, expected) in [
        (ACME, vec![1, 2, 3, 4, 5]),
        (GLOBEX, vec![11, 12, 13, 14, 15]),
    ] {
        // The other tenant's points score the same: only a filter applied inside the
        // search (not to its results) fills the limit with the tenant's own.
        let q = SearchQuery {
            limit: 5,
            ..search(tenant, &q, &SourceKind::ALL)
        };
        let hits = store.search(&g1, &q).await.expect("search");
        assert_eq!(sorted(ids(&hits)), expected, "{tenant}");
        assert!(hits.iter().all(|h| h.payload.tenant_id == tenant));
    }
    let nobody = store
        .search(&g1, &search("initech", &q, &SourceKind::ALL))
        .await
        .expect("search");
    assert!(nobody.is_empty());
    // A tenant id that is a prefix or has other spacing is another tenant.
    for other in ["acme", "acme  corp", "ACME CORP"] {
        let hits = store
            .search(&g1, &search(other, &q, &SourceKind::ALL))
            .await
            .expect("search");
        assert!(hits.is_empty(), "{other:?}");
    }
}

#[tokio::test]
async fn members_see_their_conversations_unknown_starters_and_knowledge() {
    let running = Running::start().await;
    let (store, g1) = store_with_corpus(&running).await;
    let q = [1.0, 0.2, 0.0];
    let all = search(ACME, &q, &SourceKind::ALL);
    let as_member = |who| SearchQuery {
        scope: Scope::new(ACME, who, Reach::Own),
        ..all.clone()
    };

    let ann = store.search(&g1, &as_member("ann")).await.expect("search");
    assert_eq!(sorted(ids(&ann)), [1, 2, 4, 5]);
    let bob = store.search(&g1, &as_member("bob")).await.expect("search");
    assert_eq!(sorted(ids(&bob)), [3, 4, 5]);
    let carol = store
        .search(&g1, &as_member("carol"))
        .await
        .expect("search");
    assert_eq!(sorted(ids(&carol)), [4, 5]);
    let admin = store.search(&g1, &all).await.expect("search");
    assert_eq!(sorted(ids(&admin)), [1, 2, 3, 4, 5]);

    // Another writer may store a missing starter as null: still "unknown starter".
    {
        let mut state = running.state();
        let collection = state.collections.get_mut("t_g1").expect("the collection");
        let stored = collection
            .points
            .get_mut(&id(3).to_string())
            .expect("point 3");
        stored.payload.insert(
            "started_by".into(),
            Value {
                kind: Some(Kind::NullValue(0)),
            },
        );
    }
    let carol = store
        .search(&g1, &as_member("carol"))
        .await
        .expect("search");
    assert_eq!(sorted(ids(&carol)), [3, 4, 5]);
}

#[tokio::test]
async fn kinds_and_conversation_narrow_a_search() {
    let running = Running::start().await;
    let (store, g1) = store_with_corpus(&running).await;
    let q = [1.0, 0.2, 0.0];
    let kinds = |k| search(ACME, &q, k);
    let only = |q| found(&store, &g1, q);

    assert_eq!(only(kinds(&[SourceKind::Knowledge])).await, [5]);
    assert_eq!(only(kinds(&[SourceKind::Message])).await, [1, 3, 4]);
    assert_eq!(
        only(kinds(&[SourceKind::Message, SourceKind::Document])).await,
        [1, 2, 3, 4]
    );
    assert_eq!(only(kinds(&[])).await, Vec::<u128>::new());

    let in_conv = SearchQuery {
        conversation_id: Some(id(CONV)),
        ..kinds(&SourceKind::ALL)
    };
    assert_eq!(only(in_conv.clone()).await, [1, 2]);
    let messages_in_conv = SearchQuery {
        kinds: &[SourceKind::Message],
        ..in_conv.clone()
    };
    assert_eq!(only(messages_in_conv).await, [1]);
    // bob does not see ann's conversation even when he names it.
    let bob_in_conv = SearchQuery {
        scope: Scope::new(in_conv.scope.tenant, "bob", Reach::Own),
        ..in_conv
    };
    assert_eq!(only(bob_in_conv).await, Vec::<u128>::new());
    // Knowledge has no conversation: a conversation search never returns it.
    let knowledge_in_conv = SearchQuery {
        conversation_id: Some(id(CONV)),
        ..kinds(&[SourceKind::Knowledge])
    };
    assert_eq!(only(knowledge_in_conv).await, Vec::<u128>::new());
}

#[tokio::test]
async fn unreadable_points_are_skipped_not_fatal() {
    let running = Running::start().await;
    let (store, g1) = store_with_corpus(&running).await;
    {
        let mut state = running.state();
        let collection = state.collections.get_mut("t_g1").expect("the collection");
        let stored = collection
            .points
            .get_mut(&id(1).to_string())
            .expect("point 1");
        stored
            .payload
            .insert("source_kind".into(), Value::from("email"));
        stored
            .payload
            .insert("started_by".into(), Value::from("ann"));
        // A point with a numeric id, written by someone else, with a tenant's payload.
        let mut foreign = stored.clone();
        foreign
            .payload
            .insert("source_kind".into(), Value::from("knowledge"));
        collection.points.insert("7".into(), foreign);
    }
    let q = [1.0, 0.1, 0.0];
    let hits = store
        .search(&g1, &search(ACME, &q, &[SourceKind::Knowledge]))
        .await
        .expect("search");
    assert_eq!(ids(&hits), [5], "the numeric id is skipped");
    // Point 1 no longer matches a kind the store knows, so it is not even sent back.
    let hits = store
        .search(&g1, &search(ACME, &q, &SourceKind::ALL))
        .await
        .expect("search");
    assert_eq!(sorted(ids(&hits)), [2, 3, 4, 5]);
}

#[tokio::test]
async fn deleting_a_source_removes_only_that_source_of_that_tenant() {
    let running = Running::start().await;
    let (store, g1) = store_with_corpus(&running).await;
    // A second window of document 102 in ACME.
    let second = Point {
        id: id(6),
        ..point(
            6,
            [0.0, 0.0, 1.0],
            payload(ACME, SourceKind::Document, 102, Some(CONV), Some("ann")),
        )
    };
    store.upsert(&g1, &[second]).await.expect("upsert");
    assert_eq!(store.count(&g1, Some(ACME)).await.expect("count"), 6);

    store
        .delete_source(&g1, ACME, SourceKind::Document, id(102))
        .await
        .expect("delete");
    assert_eq!(store.count(&g1, Some(ACME)).await.expect("count"), 4);
    assert_eq!(
        store.count(&g1, Some(GLOBEX)).await.expect("count"),
        5,
        "the same source id in another tenant stays"
    );
    let q = [1.0, 0.2, 0.0];
    let hits = store
        .search(&g1, &search(ACME, &q, &SourceKind::ALL))
        .await
        .expect("search");
    assert_eq!(sorted(ids(&hits)), [1, 3, 4, 5]);

    // The kind is part of the source: deleting "message 102" removes nothing.
    store
        .delete_source(&g1, GLOBEX, SourceKind::Message, id(102))
        .await
        .expect("delete");
    assert_eq!(store.count(&g1, Some(GLOBEX)).await.expect("count"), 5);
    // Deleting again is harmless.
    store
        .delete_source(&g1, ACME, SourceKind::Document, id(102))
        .await
        .expect("delete again");
    assert!(running.state().unwaited_writes.is_empty());
}

#[tokio::test]
async fn a_rename_sets_the_title_on_that_conversations_messages_only() {
    let running = Running::start().await;
    let (store, g1) = store_with_corpus(&running).await;
    store
        .set_conversation_title(&g1, ACME, id(CONV), "Renamed: Q3 plans")
        .await
        .expect("rename");
    let q = [1.0, 0.2, 0.0];
    let acme = store
        .search(&g1, &search(ACME, &q, &SourceKind::ALL))
        .await
        .expect("search");
    let title = |hits: &[Hit], n: u128| {
        hits.iter()
            .find(|h| h.id == id(n))
            .map(|h| h.payload.title.clone())
    };
    assert_eq!(title(&acme, 1).as_deref(), Some("Renamed: Q3 plans"));
    assert_eq!(
        title(&acme, 2).as_deref(),
        Some("title of 102"),
        "a document keeps its own title"
    );
    assert_eq!(
        title(&acme, 3).as_deref(),
        Some("title of 103"),
        "another conversation"
    );
    let globex = store
        .search(&g1, &search(GLOBEX, &q, &SourceKind::ALL))
        .await
        .expect("search");
    assert_eq!(
        title(&globex, 11).as_deref(),
        Some("title of 101"),
        "the same conversation id in another tenant"
    );
    // Every other payload field is kept.
    let renamed = acme.iter().find(|h| h.id == id(1)).expect("point 1");
    assert_eq!(
        renamed.payload,
        Payload {
            title: "Renamed: Q3 plans".into(),
            ..corpus()[0].payload.clone()
        }
    );
    assert!(running.state().unwaited_writes.is_empty());
}

#[tokio::test]
async fn a_dropped_index_is_gone() {
    let running = Running::start().await;
    let (store, g1) = store_with_corpus(&running).await;
    store.drop_index(&g1).await.expect("drop");
    let q = [1.0, 0.0, 0.0];
    assert_eq!(
        store.search(&g1, &search(ACME, &q, &SourceKind::ALL)).await,
        Err(VectorError::NoIndex(g1.clone()))
    );
    assert_eq!(
        store.count(&g1, None).await,
        Err(VectorError::NoIndex(g1.clone()))
    );
    assert_eq!(
        store.upsert(&g1, &corpus()).await,
        Err(VectorError::NoIndex(g1.clone()))
    );
    assert_eq!(
        store
            .delete_source(&g1, ACME, SourceKind::Message, id(1))
            .await,
        Err(VectorError::NoIndex(g1.clone()))
    );
    assert_eq!(
        store.set_conversation_title(&g1, ACME, id(CONV), "x").await,
        Err(VectorError::NoIndex(g1.clone()))
    );
    store
        .drop_index(&g1)
        .await
        .expect("dropping again is harmless");
    // Created again, it starts empty.
    store.create_index(&g1, 3).await.expect("create");
    assert_eq!(store.count(&g1, None).await, Ok(0));
}

#[tokio::test]
async fn a_wrong_api_key_is_a_configuration_to_fix_not_data_to_drop() {
    let running = Running::start().await;
    let mut config = running.config();
    config.api_key = Some("wrong".into());
    let store = QdrantStore::connect(config.clone()).await.expect("a store");
    assert!(matches!(
        store.create_index(&index("g1"), 3).await,
        Err(VectorError::Unavailable(_))
    ));
    assert!(matches!(
        store.exists(&index("g1")).await,
        Err(VectorError::Unavailable(_))
    ));
    config.api_key = None;
    let store = QdrantStore::connect(config).await.expect("a store");
    assert!(matches!(
        store.count(&index("g1"), None).await,
        Err(VectorError::Unavailable(_))
    ));
    assert!(running.state().collections.is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = QdrantConfig {
        timeout: Duration::from_millis(500),
        ..QdrantConfig::new(format!("http://127.0.0.1:{port}"))
    };
    // Connecting does not need the server.
    let store = QdrantStore::connect(config).await.expect("a store");
    let g1 = index("g1");
    let q = [1.0, 0.0, 0.0];
    assert!(matches!(
        store.create_index(&g1, 3).await,
        Err(VectorError::Unavailable(_))
    ));
    assert!(matches!(
        store.upsert(&g1, &corpus()).await,
        Err(VectorError::Unavailable(_))
    ));
    assert!(matches!(
        store.search(&g1, &search(ACME, &q, &SourceKind::ALL)).await,
        Err(VectorError::Unavailable(_))
    ));
    assert!(matches!(
        store.count(&g1, None).await,
        Err(VectorError::Unavailable(_))
    ));
    assert!(matches!(
        store.exists(&g1).await,
        Err(VectorError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_unavailable() {
    // Accepts connections and holds them without ever speaking HTTP/2.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = QdrantConfig {
        timeout: Duration::from_millis(300),
        ..QdrantConfig::new(format!("http://{addr}"))
    };
    let store = QdrantStore::connect(config).await.expect("a store");
    let started = Instant::now();
    let result = store.count(&index("g1"), None).await;
    assert!(
        matches!(result, Err(VectorError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let result = store.exists(&index("g1")).await;
    assert!(
        matches!(result, Err(VectorError::Unavailable(_))),
        "{result:?}"
    );
    silent.abort();
}

#[tokio::test]
async fn a_bad_url_is_refused_at_connect() {
    for url in ["qdrant:6334", "grpc://qdrant:6334", "http://exa mple:6334"] {
        let result = QdrantStore::connect(QdrantConfig::new(url)).await;
        assert!(matches!(result, Err(VectorError::Rejected(_))), "{url}");
    }
}

#[tokio::test]
async fn the_fake_passes_the_vector_store_conformance_suite() {
    let running = Running::start().await;
    let store = running.store().await;
    let outcomes = ::vectors::conformance::run(&store, "conformance").await;
    let failed: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(outcomes.len(), 9);
}
