//! What every [`VectorStore`] must do, as the semantic index and search rely on it: one
//! suite for every store. The tests run it against the PostgreSQL store and the fake Qdrant
//! server (`tests/conformance.rs`, `tests/qdrant_grpc.rs`); before a deployment it runs
//! against a real Qdrant with `cargo run -p vectors --example conformance -- --qdrant URL`
//! (docs/OPERATIONS.md).
//!
//! Each case works in an index of its own, named `<run>_<case number>`, and drops it when
//! it passes; a failed case leaves its index for a look.

use access::{Reach, Scope};
use uuid::Uuid;

use crate::{Hit, IndexName, Payload, Point, SearchQuery, SourceKind, VectorError, VectorStore};

/// One case's outcome.
#[derive(Debug)]
pub struct Outcome {
    pub case: &'static str,
    /// `Err` says what the store did instead.
    pub result: Result<(), String>,
}

type CaseResult = Result<(), String>;

/// The cases, in order; `run` names the indexes (a lowercase identifier of at most 50
/// bytes, so that several runs against one server do not meet).
pub async fn run(store: &dyn VectorStore, run: &str) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let cases: [(&'static str, u8); 9] = [
        (
            "creating an index twice is harmless; another dimension is refused",
            1,
        ),
        (
            "a missing index is NoIndex to searches and counts, absent, and dropped harmlessly",
            2,
        ),
        ("a hit scoring exactly min_score is kept", 3),
        ("writing the same points again replaces them", 4),
        ("no search or count crosses tenants", 5),
        (
            "a member finds knowledge, unowned and own conversations, not others'",
            6,
        ),
        ("deleting a source removes its points and no other", 7),
        (
            "a rename retitles every point of the conversation, and only its messages",
            8,
        ),
        (
            "erasing conversations removes their messages and documents, erasing a tenant all of its points, and nothing of another",
            9,
        ),
    ];
    for (case, n) in cases {
        let index = match IndexName::new(format!("{run}_{n}")) {
            Ok(index) => index,
            Err(e) => {
                outcomes.push(Outcome {
                    case,
                    result: Err(e.to_string()),
                });
                continue;
            }
        };
        let result = match n {
            1 => create_twice(store, &index).await,
            2 => missing(store, &index).await,
            3 => threshold(store, &index).await,
            4 => idempotent(store, &index).await,
            5 => tenants(store, &index).await,
            6 => members(store, &index).await,
            7 => delete_source(store, &index).await,
            8 => rename(store, &index).await,
            _ => erase(store, &index).await,
        };
        if result.is_ok() {
            let _ = store.drop_index(&index).await;
        }
        outcomes.push(Outcome { case, result });
    }
    outcomes
}

const ACME: &str = "acme";
const GLOBEX: &str = "globex";

fn unit(v: [f32; 3]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

fn point(
    tenant: &str,
    kind: SourceKind,
    source: u128,
    conversation: Option<u128>,
    started_by: Option<&str>,
    vector: [f32; 3],
) -> Point {
    Point {
        id: Uuid::from_u128(source * 1000 + u128::from(tenant == GLOBEX)),
        vector: unit(vector),
        payload: Payload {
            tenant_id: tenant.to_owned(),
            source_kind: kind,
            source_id: Uuid::from_u128(source),
            conversation_id: conversation.map(Uuid::from_u128),
            started_by: started_by.map(str::to_owned),
            title: "before".to_owned(),
            event_id: Uuid::from_u128(source + 7),
            position: 1,
            chunk: 0,
            text: format!("text of {source}"),
        },
    }
}

fn query<'a>(scope: Scope<'a>, vector: &'a [f32], min_score: Option<f32>) -> SearchQuery<'a> {
    SearchQuery {
        scope,
        vector,
        kinds: &SourceKind::ALL,
        conversation_id: None,
        limit: 50,
        min_score,
    }
}

fn admin(tenant: &str) -> Scope<'_> {
    Scope::new(tenant, "admin", Reach::Tenant)
}

fn sources(hits: &[Hit]) -> Vec<u128> {
    let mut ids: Vec<u128> = hits.iter().map(|h| h.payload.source_id.as_u128()).collect();
    ids.sort_unstable();
    ids
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, wanted: T) -> CaseResult {
    if got == wanted {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, wanted {wanted:?}"))
    }
}

fn store_error(what: &str) -> impl Fn(VectorError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

async fn fresh(store: &dyn VectorStore, index: &IndexName) -> CaseResult {
    store.drop_index(index).await.map_err(store_error("drop"))?;
    store
        .create_index(index, 3)
        .await
        .map_err(store_error("create"))
}

/// A fresh `index` holding `points`.
async fn seeded(store: &dyn VectorStore, index: &IndexName, points: &[Point]) -> CaseResult {
    fresh(store, index).await?;
    store
        .upsert(index, points)
        .await
        .map_err(store_error("upsert"))
}

async fn create_twice(store: &dyn VectorStore, index: &IndexName) -> CaseResult {
    fresh(store, index).await?;
    store
        .create_index(index, 3)
        .await
        .map_err(store_error("create again"))?;
    expect("exists", store.exists(index).await, Ok(true))?;
    match store.create_index(index, 4).await {
        Err(VectorError::Rejected(_)) => Ok(()),
        other => Err(format!("another dimension: got {other:?}, wanted Rejected")),
    }
}

async fn missing(store: &dyn VectorStore, index: &IndexName) -> CaseResult {
    store.drop_index(index).await.map_err(store_error("drop"))?;
    store
        .drop_index(index)
        .await
        .map_err(store_error("drop a missing index"))?;
    expect("exists", store.exists(index).await, Ok(false))?;
    let v = unit([1.0, 0.0, 0.0]);
    let no_index = Err(VectorError::NoIndex(index.clone()));
    expect(
        "search",
        store.search(index, &query(admin(ACME), &v, None)).await,
        no_index.clone(),
    )?;
    expect(
        "count",
        store.count(index, None).await,
        no_index.map(|_: Vec<Hit>| 0u64),
    )
}

async fn threshold(store: &dyn VectorStore, index: &IndexName) -> CaseResult {
    seeded(
        store,
        index,
        &[
            point(ACME, SourceKind::Knowledge, 1, None, None, [1.0, 0.0, 0.0]),
            point(ACME, SourceKind::Knowledge, 2, None, None, [1.0, 1.0, 0.0]),
            point(ACME, SourceKind::Knowledge, 3, None, None, [0.0, 0.0, 1.0]),
        ],
    )
    .await?;
    let v = unit([1.0, 0.2, 0.0]);
    let all = store
        .search(index, &query(admin(ACME), &v, None))
        .await
        .map_err(store_error("search"))?;
    expect("hits best first", sources(&all[..2]), vec![1, 2])?;
    let second = all[1].score;
    let kept = store
        .search(index, &query(admin(ACME), &v, Some(second)))
        .await
        .map_err(store_error("search at the second score"))?;
    expect(
        "hits at min_score equal to the second's score",
        sources(&kept),
        vec![1, 2],
    )
}

async fn idempotent(store: &dyn VectorStore, index: &IndexName) -> CaseResult {
    fresh(store, index).await?;
    let points = [
        point(ACME, SourceKind::Knowledge, 1, None, None, [1.0, 0.0, 0.0]),
        point(ACME, SourceKind::Knowledge, 2, None, None, [0.0, 1.0, 0.0]),
    ];
    for round in ["first", "second"] {
        store
            .upsert(index, &points)
            .await
            .map_err(|e| format!("{round} upsert: {e}"))?;
    }
    expect("count", store.count(index, None).await, Ok(2))
}

async fn tenants(store: &dyn VectorStore, index: &IndexName) -> CaseResult {
    seeded(
        store,
        index,
        &[
            point(ACME, SourceKind::Knowledge, 1, None, None, [1.0, 0.0, 0.0]),
            point(
                GLOBEX,
                SourceKind::Knowledge,
                2,
                None,
                None,
                [1.0, 0.0, 0.0],
            ),
            point(
                GLOBEX,
                SourceKind::Message,
                3,
                Some(30),
                None,
                [1.0, 0.1, 0.0],
            ),
        ],
    )
    .await?;
    let v = unit([1.0, 0.0, 0.0]);
    let acme = store
        .search(index, &query(admin(ACME), &v, Some(-1.0)))
        .await
        .map_err(store_error("search"))?;
    expect("acme's hits", sources(&acme), vec![1])?;
    expect("acme's count", store.count(index, Some(ACME)).await, Ok(1))?;
    expect(
        "globex's count",
        store.count(index, Some(GLOBEX)).await,
        Ok(2),
    )?;
    expect("all", store.count(index, None).await, Ok(3))
}

async fn members(store: &dyn VectorStore, index: &IndexName) -> CaseResult {
    seeded(
        store,
        index,
        &[
            point(ACME, SourceKind::Knowledge, 1, None, None, [1.0, 0.0, 0.0]),
            point(
                ACME,
                SourceKind::Message,
                2,
                Some(20),
                Some("ann"),
                [1.0, 0.1, 0.0],
            ),
            point(
                ACME,
                SourceKind::Document,
                3,
                Some(20),
                Some("ann"),
                [1.0, 0.2, 0.0],
            ),
            point(
                ACME,
                SourceKind::Message,
                4,
                Some(40),
                Some("bob"),
                [1.0, 0.3, 0.0],
            ),
            point(
                ACME,
                SourceKind::Message,
                5,
                Some(50),
                None,
                [1.0, 0.4, 0.0],
            ),
        ],
    )
    .await?;
    let v = unit([1.0, 0.0, 0.0]);
    let ann = store
        .search(
            index,
            &query(Scope::new(ACME, "ann", Reach::Own), &v, Some(-1.0)),
        )
        .await
        .map_err(store_error("ann's search"))?;
    expect("ann's hits", sources(&ann), vec![1, 2, 3, 5])?;
    let everyone = store
        .search(index, &query(admin(ACME), &v, Some(-1.0)))
        .await
        .map_err(store_error("an admin's search"))?;
    expect("an admin's hits", sources(&everyone), vec![1, 2, 3, 4, 5])
}

async fn erase(store: &dyn VectorStore, index: &IndexName) -> CaseResult {
    let [x, y, z] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    seeded(
        store,
        index,
        &[
            point(ACME, SourceKind::Message, 1, Some(10), Some("ann"), x),
            point(ACME, SourceKind::Document, 2, Some(10), Some("ann"), y),
            point(ACME, SourceKind::Message, 3, Some(11), Some("ann"), z),
            point(ACME, SourceKind::Message, 4, Some(12), Some("bob"), x),
            point(ACME, SourceKind::Knowledge, 5, None, None, y),
            point(GLOBEX, SourceKind::Message, 1, Some(10), Some("ann"), x),
        ],
    )
    .await?;
    let anns = [Uuid::from_u128(10), Uuid::from_u128(11)];
    for attempt in ["erase", "erase again"] {
        store
            .erase(index, ACME, Some(&anns))
            .await
            .map_err(store_error(attempt))?;
    }
    let hits = store
        .search(index, &query(admin(ACME), &unit(x), None))
        .await
        .map_err(store_error("an admin's search"))?;
    expect("what acme keeps", sources(&hits), vec![4, 5])?;
    if hits
        .iter()
        .any(|h| h.payload.started_by.as_deref() == Some("ann"))
    {
        return Err("a point of ann's is still found".into());
    }
    store
        .erase(index, ACME, None)
        .await
        .map_err(store_error("erase the tenant"))?;
    expect("acme's count", store.count(index, Some(ACME)).await, Ok(0))?;
    expect(
        "globex's count",
        store.count(index, Some(GLOBEX)).await,
        Ok(1),
    )
}

async fn delete_source(store: &dyn VectorStore, index: &IndexName) -> CaseResult {
    seeded(
        store,
        index,
        &[
            point(ACME, SourceKind::Knowledge, 1, None, None, [1.0, 0.0, 0.0]),
            point(ACME, SourceKind::Knowledge, 2, None, None, [0.0, 1.0, 0.0]),
            point(
                GLOBEX,
                SourceKind::Knowledge,
                1,
                None,
                None,
                [1.0, 0.0, 0.0],
            ),
        ],
    )
    .await?;
    store
        .delete_source(index, ACME, SourceKind::Knowledge, Uuid::from_u128(1))
        .await
        .map_err(store_error("delete"))?;
    store
        .delete_source(index, ACME, SourceKind::Knowledge, Uuid::from_u128(1))
        .await
        .map_err(store_error("delete again"))?;
    expect("acme's count", store.count(index, Some(ACME)).await, Ok(1))?;
    expect(
        "globex's count",
        store.count(index, Some(GLOBEX)).await,
        Ok(1),
    )
}

async fn rename(store: &dyn VectorStore, index: &IndexName) -> CaseResult {
    seeded(
        store,
        index,
        &[
            point(
                ACME,
                SourceKind::Message,
                1,
                Some(10),
                None,
                [1.0, 0.0, 0.0],
            ),
            point(
                ACME,
                SourceKind::Message,
                2,
                Some(10),
                None,
                [1.0, 0.1, 0.0],
            ),
            point(
                ACME,
                SourceKind::Document,
                3,
                Some(10),
                None,
                [1.0, 0.2, 0.0],
            ),
            point(
                ACME,
                SourceKind::Message,
                4,
                Some(11),
                None,
                [1.0, 0.3, 0.0],
            ),
            point(
                GLOBEX,
                SourceKind::Message,
                1,
                Some(10),
                None,
                [1.0, 0.0, 0.0],
            ),
        ],
    )
    .await?;
    store
        .set_conversation_title(index, ACME, Uuid::from_u128(10), "after")
        .await
        .map_err(store_error("rename"))?;
    let v = unit([1.0, 0.0, 0.0]);
    let titles = |hits: Vec<Hit>| {
        let mut t: Vec<(u128, String)> = hits
            .into_iter()
            .map(|h| (h.payload.source_id.as_u128(), h.payload.title))
            .collect();
        t.sort();
        t
    };
    let acme = store
        .search(index, &query(admin(ACME), &v, Some(-1.0)))
        .await
        .map_err(store_error("search"))?;
    let renamed = |n: u128, t: &str| (n, t.to_owned());
    expect(
        "acme's titles",
        titles(acme),
        vec![
            renamed(1, "after"),
            renamed(2, "after"),
            renamed(3, "before"),
            renamed(4, "before"),
        ],
    )?;
    let globex = store
        .search(index, &query(admin(GLOBEX), &v, Some(-1.0)))
        .await
        .map_err(store_error("globex's search"))?;
    expect(
        "globex's titles",
        titles(globex),
        vec![renamed(1, "before")],
    )
}
