//! Every query the query API runs on the read model, against tables the projection
//! created: a column renamed on one side and not the other fails here, not in production.
//! Then the projection through the test kit: given commands, the rows expected.

use std::sync::Arc;
use std::time::Duration;

use access::{Reach, Scope};
use projection::TableSink;
use read_model::queries::ConversationFilter;
use read_model::{ReadModel, Reads};
use schemas::{AggregateKind, Version, VersionToken};
use serde_json::json;
use testkit::projection::Kit;

#[tokio::test]
async fn every_query_runs_on_the_tables_the_projection_creates() {
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.unwrap();
    projection::migrate(&db.pool).await.unwrap();
    let reads = Reads::new(db.pool.clone());
    let id = uuid::Uuid::new_v4();
    let token = VersionToken {
        kind: AggregateKind::Conversation,
        id,
        version: Version(1),
    };
    let member = Scope::new("acme", "ann", Reach::Own);
    // Before the projector created anything: "not built yet", not a database error.
    assert!(matches!(
        reads.conversation(&member, id).await,
        Err(read_model::queries::ReadError::NoReadModel)
    ));
    projection::generation::ensure_live(&db.pool, &TableSink(ReadModel))
        .await
        .unwrap();
    assert_eq!(reads.applied_version(&token).await.unwrap(), 0);
    assert_eq!(
        reads
            .wait_for(&token, Duration::from_millis(10))
            .await
            .unwrap(),
        Err(0)
    );
    let filter = ConversationFilter {
        status: Some("open".into()),
        active_after: Some(chrono::Utc::now()),
        active_before: Some(chrono::Utc::now()),
        after: Some((chrono::Utc::now(), id)),
        limit: 10,
    };
    // Every query, as a member (the visibility clause bound) and as an admin (not).
    let admin = Scope::new("acme", "root", Reach::Tenant);
    for viewer in [member, admin] {
        assert!(
            reads
                .conversations(&viewer, &filter)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(reads.conversation(&viewer, id).await.unwrap().is_none());
        assert!(
            reads
                .conversation_summary(&viewer, id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(reads.messages(&viewer, id, 0, 10).await.unwrap().is_empty());
        assert!(
            reads
                .documents_of(&viewer, id, Some((chrono::Utc::now(), id)), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(reads.document(&viewer, id).await.unwrap().is_none());
    }
    assert!(
        reads
            .knowledge("acme", Some((chrono::Utc::now(), id)), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        reads
            .knowledge_document("acme", id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        reads
            .webhook_endpoints("acme", Some((chrono::Utc::now(), id)), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(reads.webhook_endpoint("acme", id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conversation_with_a_summary_reads_back_as_it_was_written() {
    let kit = Kit::start(Arc::new(TableSink(ReadModel))).await;
    let c = kit.start_conversation("acme", "Launch plan").await;
    kit.send("acme", c, "Ship in May").await;
    kit.summarise("acme", c).await;
    kit.end("acme", c).await;
    kit.settle().await;
    assert_eq!(
        kit.rows("SELECT title, status, message_count, version FROM {schema}.conversations")
            .await,
        vec![json!({"title": "Launch plan", "status": "ended", "message_count": 1, "version": 3})]
    );
    assert_eq!(
        kit.rows("SELECT role, content, sequence FROM {schema}.messages")
            .await,
        vec![json!({"role": "user", "content": "Ship in May", "sequence": 2})]
    );
    assert_eq!(
        kit.rows("SELECT kind, title, source_message_count FROM {schema}.documents")
            .await,
        vec![
            json!({"kind": "summary", "title": "Summary: Launch plan", "source_message_count": 1})
        ]
    );
    kit.stop().await;
}

/// The read model's commits are announced: a counter subscribed before a write moves when
/// the projector applies it, and a wait given that counter returns with the write.
#[tokio::test]
async fn each_commit_of_the_read_model_is_announced_to_its_waiters() {
    let kit = Kit::start(Arc::new(TableSink(ReadModel))).await;
    let announcements = projection::progress::Announcements::listen(kit.stack.db.pool.clone());
    let mut counter = announcements.of(read_model::NAME);
    let other = announcements.of("another_projection");
    // The listener is connected once a first commit is seen: write until then.
    let first = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            kit.start_conversation("acme", "Warm-up").await;
            if tokio::time::timeout(Duration::from_secs(2), counter.changed())
                .await
                .is_ok()
            {
                break;
            }
        }
    })
    .await;
    assert!(first.is_ok(), "no commit of the read model was announced");
    let c = kit.start_conversation("acme", "Launch plan").await;
    kit.send("acme", c, "Ship in May").await;
    let token = VersionToken {
        kind: AggregateKind::Conversation,
        id: c,
        version: Version(2),
    };
    let waited = projection::progress::wait_for(
        &kit.stack.db.pool,
        read_model::NAME,
        &token,
        Duration::from_secs(30),
        Some(announcements.of(read_model::NAME)),
    )
    .await
    .expect("wait");
    assert_eq!(waited, Ok(()));
    assert!(
        counter.has_changed().expect("listening"),
        "the write was announced"
    );
    assert!(
        !other.has_changed().expect("listening"),
        "another projection's counter moved with the read model's commits"
    );
    kit.stop().await;
}

/// The read model's SQL renders `access`'s rule: every conversation case of the
/// conformance table, read back through the queries the query API runs (one
/// conversation, its summary, the listing), is found exactly when the rule says it is
/// seen. (Knowledge is the whole tenant's, filtered by tenant alone; webhook endpoints and
/// inboxes are read by role and by user, not through this rule.)
#[tokio::test]
async fn the_queries_see_what_the_visibility_rule_says() {
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.unwrap();
    projection::migrate(&db.pool).await.unwrap();
    projection::generation::ensure_live(&db.pool, &TableSink(ReadModel))
        .await
        .unwrap();
    let schema = projection::generation::live_schema_in(&db.pool, read_model::NAME)
        .await
        .unwrap()
        .expect("a live generation");
    let reads = Reads::new(db.pool.clone());
    let all = ConversationFilter {
        status: None,
        active_after: None,
        active_before: None,
        after: None,
        limit: 100,
    };
    let mut checked = 0;
    for (scope, resource, seen) in access::conformance::CASES {
        if resource.kind != access::Kind::Conversation {
            continue;
        }
        // A tenant of this case's own, so the listing holds this conversation alone.
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let (scope_tenant, resource_tenant) = (
            format!("{}-{suffix}", scope.tenant),
            format!("{}-{suffix}", resource.tenant),
        );
        let scope = Scope::new(&scope_tenant, scope.subject, scope.reach);
        let id = uuid::Uuid::new_v4();
        sqlx::query(&format!(
            "INSERT INTO {schema}.conversations (tenant_id, conversation_id, title, status,
                 metadata, version, started_at, started_by, last_activity_at)
             VALUES ($1, $2, 'case', 'open', '{{}}', 1, now(), $3, now())"
        ))
        .bind(&resource_tenant)
        .bind(id)
        .bind(resource.owner)
        .execute(&db.pool)
        .await
        .unwrap();
        let case = format!("{scope:?} {resource:?}");
        let one = reads.conversation(&scope, id).await.unwrap();
        assert_eq!(one.is_some(), *seen, "conversation: {case}");
        let summary = reads.conversation_summary(&scope, id).await.unwrap();
        assert_eq!(summary.is_some(), *seen, "summary: {case}");
        let listed = reads.conversations(&scope, &all).await.unwrap();
        assert_eq!(
            listed.iter().any(|c| c.conversation_id == id),
            *seen,
            "listing: {case}"
        );
        checked += 1;
    }
    assert!(checked >= 5, "{checked} conversation cases");
}
