//! The semantic index against a real PostgreSQL and a real broker, embedding through the
//! OpenAI-compatible provider talking to a real HTTP server standing in for one (its
//! model is a bag of hashed words: a keyword finds its source). The paraphrase corpus
//! with the local model is in `tests/corpus.rs`.

use std::sync::Arc;
use std::time::Duration;

use access::{Reach, Scope};
use embeddings::chunk::ChunkConfig;
use projection::EffectSink;
use semantic_index::{Search, SearchError, SearchRequest, SemanticIndex, index_name};
use testkit::commands::{add_knowledge, meta, user_message};
use testkit::embeddings_server::{EmbeddingsServer, Scripted};
use testkit::{RunningProjector, Stack, wait_until};
use uuid::Uuid;
use vectors::pg::PgStore;
use vectors::{SourceKind, VectorStore};

/// Windows of 24 (approximate) tokens overlapping by 4: long texts make several points.
fn chunking() -> ChunkConfig {
    ChunkConfig::new(24, 4, 512).expect("a valid configuration")
}

struct Index {
    stack: Stack,
    store: Arc<PgStore>,
    server: EmbeddingsServer,
}

impl Index {
    async fn new() -> Index {
        let stack = Stack::new().await;
        let store = Arc::new(
            PgStore::new(stack.db.pool.clone())
                .await
                .expect("vector tables"),
        );
        Index {
            stack,
            store,
            server: EmbeddingsServer::start().await,
        }
    }

    fn sink(&self, model: &str) -> Arc<EffectSink<SemanticIndex>> {
        Arc::new(EffectSink::new(SemanticIndex::new(
            self.server.embedder(model),
            self.store.clone(),
            chunking(),
            self.stack.db.pool.clone(),
        )))
    }

    async fn projector(&self, model: &str) -> RunningProjector {
        self.stack.projector(self.sink(model)).await
    }

    fn search(&self, models: &[&str]) -> Search {
        Search::new(
            self.stack.db.pool.clone(),
            self.store.clone(),
            models.iter().map(|m| self.server.embedder(m)).collect(),
        )
    }

    /// Points of the live index (tombstones excluded), and distinct point ids.
    async fn points(&self) -> (u64, i64) {
        let (index, _) = self.search(&[]).live_index().await.expect("a live index");
        // The projector creates the index with the generation's first text.
        let n = match self.store.count(&index, None).await {
            Err(vectors::VectorError::NoIndex(_)) => 0,
            counted => counted.expect("count"),
        };
        let ids = self
            .stack
            .scalar(&format!(
                "SELECT count(DISTINCT id) FROM vector_points WHERE index_name = '{index}' AND vector IS NOT NULL"
            ))
            .await;
        (n, ids)
    }

    /// Waits until the live index holds every window of the event store's texts; says
    /// what it holds, what it should and what `projector` reports if that never happens.
    async fn indexed(&self, projector: &RunningProjector) -> u64 {
        let expected = self.expected_points().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let points = self.points().await;
            if points.0 == expected {
                return expected;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for every window indexed: {points:?} of {expected}; {:?}",
                *projector.status.borrow()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The windows every text in the event store makes: the points the index must hold.
    async fn expected_points(&self) -> u64 {
        testkit::semantic::expected_points(&self.stack.db.pool, chunking()).await
    }
}

/// A message long enough for several windows.
fn long_message(n: usize) -> String {
    (0..60)
        .map(|i| format!("sentence {i} of message {n} about the quarterly roadmap."))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn write_corpus(stack: &Stack, tenant: &str, conversations: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for n in 0..conversations {
        ids.push(testkit::commands::summarised_and_ended(&stack.service, tenant, n).await);
    }
    let long = stack
        .service
        .start_conversation("Roadmap".into(), Default::default(), &meta(tenant))
        .await
        .expect("start")
        .aggregate_id;
    for n in 0..3 {
        stack
            .service
            .send_message(long, user_message(&long_message(n)), None, &meta(tenant))
            .await
            .expect("send");
    }
    ids.push(long);
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_window_is_one_point_after_redelivery_a_kill_and_a_rebuild() {
    let index = Index::new().await;
    let _relay = index.stack.relay();
    // The first projector on connections of its own, as a process of its own would be:
    // killing a process closes its connections, and PostgreSQL rolls back what they held.
    let doomed = index.stack.db.config.connect().await.expect("a pool");
    let sink = Arc::new(EffectSink::new(SemanticIndex::new(
        index.server.embedder("bow"),
        Arc::new(PgStore::new(doomed.clone()).await.expect("vector tables")),
        chunking(),
        doomed.clone(),
    )));
    let first = index
        .stack
        .projector_on(doomed.clone(), sink, "semantic")
        .await;
    let writer = write_corpus(&index.stack, "acme", 30);
    let kill = async {
        first.wait_for("some points", |s| s.applied >= 20).await;
        // Killed mid-stream: nothing committed since its last batch is redelivered. An
        // aborted task can leave a transaction open on a pooled connection (its locks
        // held until the server's idle-in-transaction timeout, a minute): closing the
        // pool is what the process's death does to them.
        first.kill().await;
        doomed.close().await;
    };
    tokio::join!(writer, kill);
    add_knowledge(
        &index.stack.service,
        "acme",
        "Handbook",
        "text/plain",
        long_message(9).as_bytes(),
    )
    .await;
    let second = index.projector("bow").await;
    let expected = index.indexed(&second).await;
    assert!(expected > 100, "several windows per long text: {expected}");
    let (points, ids) = index.points().await;
    assert_eq!(
        (points, ids as u64),
        (expected, expected),
        "one point per window"
    );
    second.stop().await;

    // A rebuild indexes everything again into a new generation's index, once.
    let before = index.search(&[]).live_index().await.expect("live").0;
    let report = projection::rebuild(&index.stack.db.pool, index.sink("bow").as_ref())
        .await
        .expect("rebuild");
    assert_eq!(report.parked, 0);
    let after = index.search(&[]).live_index().await.expect("live").0;
    assert_ne!(before, after);
    assert_eq!(
        after,
        index_name(&report.schema, index.server.embedder("bow").model())
    );
    assert_eq!(index.points().await, (expected, expected as i64));
    assert_eq!(
        index.store.count(&before, None).await.expect("count"),
        expected,
        "the old index is left as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_provider_delays_the_index_parks_nothing_and_it_recovers_by_itself() {
    let index = Index::new().await;
    let _relay = index.stack.relay();
    // Down, then throttling, then answering nonsense: several rounds of each.
    index.server.script(
        std::iter::repeat_n(Scripted::Status(503), 6)
            .chain(std::iter::repeat_n(Scripted::Throttle(1), 4))
            .chain(std::iter::repeat_n(Scripted::Malformed, 6)),
    );
    let projector = index.projector("bow").await;
    write_corpus(&index.stack, "acme", 5).await;
    projector
        .wait_for("the outage to show", |s| {
            s.outage_retries >= 2 && s.lag_events > 0
        })
        .await;
    index.indexed(&projector).await;
    assert_eq!(
        index.server.scripted_left(),
        0,
        "every scripted failure was met"
    );
    let status = projector.status.borrow().clone();
    assert_eq!(status.parked, 0, "{status:?}");
    assert_eq!(status.dead_lettered, 0, "{status:?}");
    projector.stop().await;
    let parked = index
        .stack
        .scalar(&format!(
            "SELECT count(*) FROM {}.parked",
            index.stack.live_schema("semantic").await
        ))
        .await;
    assert_eq!(parked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn searches_stay_inside_the_tenant_and_what_the_viewer_sees() {
    let index = Index::new().await;
    let _relay = index.stack.relay();
    let projector = index.projector("bow").await;
    let service = &index.stack.service;
    // The same words in two tenants, and in two members' conversations.
    let mut conversations = Vec::new();
    for (tenant, member) in [("acme", "ann"), ("acme", "bob"), ("globex", "ann")] {
        let mut m = meta(tenant);
        m.user_id = member.into();
        let id = service
            .start_conversation(format!("{member} plans"), Default::default(), &m)
            .await
            .expect("start")
            .aggregate_id;
        service
            .send_message(id, user_message("the launch happens in May"), None, &m)
            .await
            .expect("send");
        conversations.push((tenant, member, id));
    }
    for tenant in ["acme", "globex"] {
        add_knowledge(
            service,
            tenant,
            "Launch policy",
            "text/plain",
            b"every launch needs a review",
        )
        .await;
    }
    index.indexed(&projector).await;
    let search = index.search(&["bow"]);
    let kinds: [&[SourceKind]; 4] = [
        &SourceKind::ALL,
        &[SourceKind::Message],
        &[SourceKind::Document],
        &[SourceKind::Knowledge],
    ];
    let mut seen_any = 0;
    for tenant in ["acme", "globex"] {
        for only in [None, Some("ann"), Some("bob")] {
            for kinds in kinds {
                let mut filters = vec![None];
                filters.extend(conversations.iter().map(|(_, _, id)| Some(*id)));
                for conversation_id in filters {
                    let found = search
                        .search(&SearchRequest {
                            scope: scope_of(tenant, only),
                            text: "launch",
                            kinds,
                            conversation_id,
                            limit: 50,
                            min_score: None,
                        })
                        .await
                        .expect("search");
                    for hit in &found.hits {
                        seen_any += 1;
                        let p = &hit.payload;
                        let case =
                            format!("{tenant} {only:?} {kinds:?} {conversation_id:?}: {p:?}");
                        assert_eq!(p.tenant_id, tenant, "{case}");
                        assert!(kinds.contains(&p.source_kind), "{case}");
                        if let Some(c) = conversation_id {
                            assert_eq!(p.conversation_id, Some(c), "{case}");
                        }
                        let owner = conversations
                            .iter()
                            .find(|(_, _, id)| Some(*id) == p.conversation_id);
                        match owner {
                            Some((t, member, _)) => {
                                assert_eq!(*t, tenant, "{case}");
                                if let Some(subject) = only {
                                    assert_eq!(*member, subject, "{case}");
                                }
                            }
                            None => assert_eq!(p.source_kind, SourceKind::Knowledge, "{case}"),
                        }
                    }
                }
            }
        }
    }
    assert!(seen_any > 0, "the searches found something to check");
    // What each viewer should find, exactly.
    let sources = |only: Option<&'static str>, tenant: &'static str| {
        let search = &search;
        async move {
            let mut ids: Vec<Uuid> = search
                .search(&SearchRequest {
                    scope: scope_of(tenant, only),
                    text: "launch",
                    kinds: &[SourceKind::Message],
                    conversation_id: None,
                    limit: 50,
                    min_score: None,
                })
                .await
                .expect("search")
                .hits
                .into_iter()
                .filter_map(|h| h.payload.conversation_id)
                .collect();
            ids.sort();
            ids
        }
    };
    let [(_, _, ann), (_, _, bob), (_, _, globex_ann)] = conversations[..] else {
        panic!("three conversations")
    };
    let mut both = vec![ann, bob];
    both.sort();
    assert_eq!(sources(None, "acme").await, both);
    assert_eq!(sources(Some("ann"), "acme").await, vec![ann]);
    assert_eq!(sources(Some("bob"), "acme").await, vec![bob]);
    assert_eq!(sources(Some("ann"), "globex").await, vec![globex_ann]);
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rename_retitles_points_and_a_removed_knowledge_document_leaves_the_index() {
    let index = Index::new().await;
    let _relay = index.stack.relay();
    let projector = index.projector("bow").await;
    let service = &index.stack.service;
    let id = service
        .start_conversation("Draft".into(), Default::default(), &meta("acme"))
        .await
        .expect("start")
        .aggregate_id;
    service
        .send_message(
            id,
            user_message("pricing of the premium tier"),
            None,
            &meta("acme"),
        )
        .await
        .expect("send");
    service
        .rename_conversation(id, "Pricing review".into(), None, &meta("acme"))
        .await
        .expect("rename");
    service
        .send_message(
            id,
            user_message("premium tier discount for schools"),
            None,
            &meta("acme"),
        )
        .await
        .expect("send");
    let doc = add_knowledge(
        service,
        "acme",
        "Premium",
        "text/plain",
        b"premium tier includes support",
    )
    .await;
    index.indexed(&projector).await;
    let search = index.search(&["bow"]);
    let request = SearchRequest {
        scope: Scope::new("acme", "admin", Reach::Tenant),
        text: "premium tier",
        kinds: &SourceKind::ALL,
        conversation_id: None,
        limit: 10,
        min_score: None,
    };
    let found = search.search(&request).await.expect("search");
    let titles: Vec<(&str, SourceKind)> = found
        .hits
        .iter()
        .map(|h| (h.payload.title.as_str(), h.payload.source_kind))
        .collect();
    assert_eq!(titles.len(), 3, "{titles:?}");
    for (title, kind) in &titles {
        match kind {
            SourceKind::Message => assert_eq!(*title, "Pricing review", "{titles:?}"),
            _ => assert_eq!(*title, "Premium"),
        }
    }
    let mut admin = meta("acme");
    admin.reach = commands::Reach::Tenant;
    let removed = service
        .remove_knowledge(doc.aggregate_id, None, &admin)
        .await
        .expect("remove");
    search
        .wait_for(&removed.token(), Duration::from_secs(30))
        .await
        .expect("database")
        .expect("indexed in time");
    let found = search.search(&request).await.expect("search");
    assert!(
        found
            .hits
            .iter()
            .all(|h| h.payload.source_kind == SourceKind::Message)
    );
    assert_eq!(found.hits.len(), 2);
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_with_another_model_switches_atomically_while_searches_answer() {
    let index = Index::new().await;
    let _relay = index.stack.relay();
    let old = index.projector("bow-a").await;
    write_corpus(&index.stack, "acme", 20).await;
    let expected = index.indexed(&old).await;

    // Searches run throughout, embedding with whichever model the live index has.
    let search = Arc::new(index.search(&["bow-a", "bow-b"]));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // The models the searches ranked with, in order, each once.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let searcher = tokio::spawn({
        let search = search.clone();
        let seen = seen.clone();
        async move {
            while !*stopped.borrow() {
                let found = search
                    .search(&SearchRequest {
                        scope: Scope::new("acme", "admin", Reach::Tenant),
                        text: "quarterly roadmap",
                        kinds: &SourceKind::ALL,
                        conversation_id: None,
                        limit: 3,
                        min_score: None,
                    })
                    .await
                    .expect("every search answers, before, during and after the switch");
                assert_eq!(found.hits.len(), 3, "and finds its sources");
                assert!(
                    found
                        .hits
                        .iter()
                        .all(|h| h.payload.text.contains("roadmap"))
                );
                {
                    let mut models = seen.lock().unwrap_or_else(|p| p.into_inner());
                    if models.last() != Some(&found.model.name) {
                        models.push(found.model.name.clone());
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let report = projection::rebuild(&index.stack.db.pool, index.sink("bow-b").as_ref())
        .await
        .expect("rebuild with the new model");
    // Searches after the switch rank with the new model; a few more, then stop.
    let searched_with = |model: &'static str| {
        let seen = seen.clone();
        move || {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .any(|m| m == model)
            }
        }
    };
    wait_until(
        "a search ranked by the new model",
        searched_with("openai/bow-b"),
    )
    .await;
    let _ = stop.send(true);
    searcher.await.expect("the searcher");
    let models = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(
        models,
        ["openai/bow-a", "openai/bow-b"],
        "one switch, never back"
    );
    assert_eq!(index.points().await.0, expected);

    // The old model's projector no longer writes: it waits (nothing parked) until it is
    // redeployed with the new model.
    index
        .stack
        .service
        .send_message(
            write_corpus_id(&index).await,
            user_message("one more roadmap note"),
            None,
            &meta("acme"),
        )
        .await
        .expect("send");
    old.wait_for("the old projector to refuse the new index", |s| {
        s.outage_retries > 0
    })
    .await;
    assert_eq!(old.status.borrow().parked, 0);
    old.kill().await;
    let new = index.projector("bow-b").await;
    let expected = index.expected_points().await;
    wait_until("the new projector to catch up", || async {
        index.points().await.0 == expected
    })
    .await;
    assert_eq!(report.parked, 0);
    new.stop().await;
}

/// A conversation of the corpus that is still open (the long one).
async fn write_corpus_id(index: &Index) -> Uuid {
    let id: Uuid = sqlx::query_scalar(
        "SELECT (payload->'ConversationStarted'->>'conversation_id')::uuid FROM events
         WHERE payload->'ConversationStarted'->>'title' = 'Roadmap' LIMIT 1",
    )
    .fetch_one(&index.stack.db.pool)
    .await
    .expect("the roadmap conversation");
    id
}

/// A member's scope for `Some(subject)`, the whole tenant's for `None`.
fn scope_of<'a>(tenant: &'a str, only: Option<&'a str>) -> access::Scope<'a> {
    match only {
        Some(subject) => access::Scope::new(tenant, subject, access::Reach::Own),
        None => access::Scope::new(tenant, "admin", access::Reach::Tenant),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_index_answers_503_and_shows_as_a_wait_never_as_an_empty_index() {
    let index = Index::new().await;
    let _relay = index.stack.relay();
    let first = index.projector("bow").await;
    write_corpus(&index.stack, "acme", 2).await;
    index.indexed(&first).await;
    first.stop().await;
    // The collection goes (deleted by hand, or the store started on empty storage).
    let (live, _) = index.search(&[]).live_index().await.expect("a live index");
    index.store.drop_index(&live).await.expect("lose the index");

    let found = index
        .search(&["bow"])
        .search(&SearchRequest {
            scope: Scope::new("acme", "admin", Reach::Tenant),
            text: "roadmap",
            kinds: &SourceKind::ALL,
            conversation_id: None,
            limit: 10,
            min_score: None,
        })
        .await;
    assert!(
        matches!(&found, Err(SearchError::IndexLost(why)) if why.contains("rebuild")),
        "a lost index is not an empty one: {found:?}"
    );

    // A restarted projector does not create an empty index in its place: it waits, and
    // says why in its status.
    let second = index.projector("bow").await;
    write_corpus(&index.stack, "acme", 1).await;
    second
        .wait_for("the loss to show", |s| {
            s.waiting_on
                .as_deref()
                .is_some_and(|w| w.contains("is gone"))
        })
        .await;
    assert_eq!(
        index.store.exists(&live).await,
        Ok(false),
        "the lost index was not created again, empty"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generation_from_before_created_at_is_read_and_gets_it() {
    let index = Index::new().await;
    let _relay = index.stack.relay();
    let first = index.projector("bow").await;
    write_corpus(&index.stack, "acme", 1).await;
    let expected = index.indexed(&first).await;
    first.stop().await;
    // The generation as an earlier version made it: no `created_at` column.
    let schema = index.stack.live_schema("semantic").await;
    sqlx::query(&format!(
        "ALTER TABLE {schema}.index_info DROP COLUMN created_at"
    ))
    .execute(&index.stack.db.pool)
    .await
    .expect("an old index_info");
    assert_eq!(index.points().await.0, expected, "search reads it");

    let second = index.projector("bow").await;
    write_corpus(&index.stack, "acme", 1).await;
    let expected = index.expected_points().await;
    wait_until("the new texts indexed", || async {
        index.points().await.0 == expected
    })
    .await;
    second.stop().await;
    let recorded = index
        .stack
        .scalar(&format!(
            "SELECT count(*) FROM {schema}.index_info WHERE created_at IS NOT NULL"
        ))
        .await;
    assert_eq!(recorded, 1, "the column is back and records the index");
}
