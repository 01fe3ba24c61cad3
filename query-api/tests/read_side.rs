//! The read path: commands, relay, read-model projector, query API over HTTP, against a
//! real PostgreSQL and a real broker. Paging, and a rebuild while reads continue.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::ReadStack;
use platform::auth::Role;
use projection::TableSink;
use read_model::ReadModel;
use reqwest::StatusCode;
use serde_json::Value;
use testkit::commands::{add_knowledge, meta, send_messages, start_conversations, user_message};
use testkit::wait_until;

struct Http {
    client: reqwest::Client,
    token: String,
}

impl Http {
    fn new(stack: &ReadStack, tenant: &str, roles: &[Role]) -> Http {
        Http {
            client: reqwest::Client::new(),
            token: stack.commands.token(tenant, roles),
        }
    }

    /// A caller of `tenant` with a subject of its own.
    fn as_user(tenant: &str, subject: &str, roles: &[Role]) -> Http {
        Http {
            client: reqwest::Client::new(),
            token: testkit::tokens::hs256_token(
                testkit::tokens::SECRET,
                tenant,
                subject,
                roles,
                3600,
            ),
        }
    }

    async fn get(&self, url: String) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("get");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

async fn live_schema(stack: &ReadStack) -> String {
    stack.commands.live_schema("read_model").await
}

async fn scalar(stack: &ReadStack, sql: &str) -> i64 {
    stack.commands.scalar(sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conversation_pages_follow_their_cursor_without_gaps() {
    let stack = ReadStack::spawn().await;
    let service = stack.commands.service.clone();
    let projector = stack.read_model().await;
    let ids = start_conversations(&service, "acme", 25).await;
    service
        .end_conversation(ids[3], None, None, &meta("acme"))
        .await
        .unwrap();
    let http = Http::new(&stack, "acme", &[Role::Auditor]);
    let q = &stack.query_base;
    wait_until("the read model", || async {
        scalar(&stack, "SELECT count(*) FROM events").await == 26
            && projector.status.borrow().applied == 26
    })
    .await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = http
            .get(format!("{q}/v1/conversations?limit=10{cursor}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            seen.push(item["conversation_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(
        seen.iter().collect::<std::collections::HashSet<_>>().len(),
        25
    );
    let (_, ended) = http.get(format!("{q}/v1/conversations?status=ended")).await;
    assert_eq!(ended["items"][0]["conversation_id"], ids[3].to_string());
    let (status, _) = http.get(format!("{q}/v1/conversations?limit=0")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    projector.stop().await;
}

async fn snapshot(stack: &ReadStack, schema: &str) -> Value {
    let sql = format!(
        "SELECT json_build_object(
            'conversations', (SELECT json_agg(c ORDER BY c.conversation_id) FROM {schema}.conversations c),
            'messages', (SELECT json_agg(m ORDER BY m.message_id) FROM {schema}.messages m),
            'documents', (SELECT json_agg(d ORDER BY d.document_id) FROM {schema}.documents d))"
    );
    sqlx::query_scalar(&sql)
        .fetch_one(&stack.commands.db.pool)
        .await
        .expect("snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_killed_and_restarted_ends_equal_to_a_rebuild_from_the_store() {
    let stack = ReadStack::spawn().await;
    let service = stack.commands.service.clone();
    let first = stack.read_model().await;
    let ids = Arc::new(start_conversations(&service, "acme", 20).await);
    let writers = tokio::spawn(send_messages(
        service.clone(),
        "acme",
        ids.clone(),
        0..800,
        8,
    ));
    let mut status = first.status.clone();
    tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| s.applied >= 150),
    )
    .await
    .expect("first projector progressed")
    .expect("status");
    first.task.abort();
    let _ = first.task.await;
    let second = stack.read_model().await;
    writers.await.unwrap();
    let schema = live_schema(&stack).await;
    wait_until("every message projected", || async {
        scalar(&stack, &format!("SELECT count(*) FROM {schema}.messages")).await == 800
    })
    .await;
    assert_eq!(
        scalar(&stack, &format!("SELECT count(*) FROM (SELECT DISTINCT conversation_id, sequence FROM {schema}.messages) d")).await,
        800,
        "no duplicate messages"
    );
    let live = snapshot(&stack, &schema).await;

    // Rebuild from the event store while the query API keeps serving.
    let http = Http::new(&stack, "acme", &[Role::Member]);
    let q = stack.query_base.clone();
    let reader = tokio::spawn(async move {
        let mut ok = 0;
        for _ in 0..40 {
            let (status, _) = http.get(format!("{q}/v1/conversations?limit=5")).await;
            assert_eq!(status, StatusCode::OK, "reads continue during the rebuild");
            ok += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ok
    });
    let report = projection::rebuild(&stack.commands.db.pool, &TableSink(ReadModel))
        .await
        .expect("rebuild");
    assert_eq!(reader.await.unwrap(), 40);
    assert_eq!(report.generation, 2);
    assert_eq!(report.replayed, 820);
    assert_eq!(live_schema(&stack).await, report.schema);
    let rebuilt = snapshot(&stack, &report.schema).await;
    assert_eq!(
        live, rebuilt,
        "the live read model equals one rebuilt from the event store"
    );

    // The live projector follows the switch.
    service
        .send_message(ids[0], user_message("after rebuild"), None, &meta("acme"))
        .await
        .unwrap();
    wait_until("the new generation receives new events", || async {
        scalar(
            &stack,
            &format!("SELECT count(*) FROM {}.messages", report.schema),
        )
        .await
            == 801
    })
    .await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenants_position_token_behaves_as_one_that_does_not_exist() {
    let stack = ReadStack::spawn().await;
    let projector = stack.read_model().await;
    let service = stack.commands.service.clone();
    let theirs = start_conversations(&service, "acme", 1).await[0];
    for n in 0..5 {
        service
            .send_message(theirs, user_message(&format!("m{n}")), None, &meta("acme"))
            .await
            .unwrap();
    }
    projector
        .wait_for("acme's conversation applied", |s| s.applied == 6)
        .await;
    let q = &stack.query_base;
    let outsider = Http::new(&stack, "globex", &[Role::Member]);
    // Already applied (version 3) and not yet (version 999999): neither may differ from an
    // id that does not exist, in status, body or time taken.
    for version in [3, 999_999] {
        let mut answers = Vec::new();
        for id in [theirs, uuid::Uuid::new_v4()] {
            let started = std::time::Instant::now();
            let (status, body) = outsider
                .get(format!(
                    "{q}/v1/conversations?position=conversation:{id}:{version}&wait_ms=300"
                ))
                .await;
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(300),
                "version {version}: answered after {took:?}, before the wait ran out"
            );
            answers.push((
                status,
                body["code"].clone(),
                body["applied_version"].clone(),
            ));
        }
        assert_eq!(
            answers[0], answers[1],
            "version {version}: another tenant's id answers like a missing one"
        );
        assert_eq!(
            answers[0],
            (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!("position_not_reached"),
                serde_json::json!(0)
            )
        );
    }
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_member_reads_the_tenants_knowledge_base_and_its_originals() {
    let stack = ReadStack::spawn().await;
    let service = stack.commands.service.clone();
    let projector = stack.read_model().await;
    let pdf = testkit::files::pdf_with_text(&["Support answers within one business day."]);
    let policy = add_knowledge(&service, "acme", "Support policy", "application/pdf", &pdf).await;
    let notes = add_knowledge(
        &service,
        "acme",
        "Notes",
        "text/markdown",
        b"# Notes\nShip in May.",
    )
    .await;
    let theirs = add_knowledge(&service, "globex", "Theirs", "text/plain", b"Globex facts.").await;
    let q = &stack.query_base;
    // A member who added nothing sees the whole knowledge base, newest first. (A position
    // is one aggregate's: the two documents are two aggregates, possibly on two
    // partitions, so the listing waits for both.)
    let member = Http::new(&stack, "acme", &[Role::Member]);
    let (status, _) = member
        .get(format!("{q}/v1/knowledge?position={}", policy.token()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, page) = member
        .get(format!("{q}/v1/knowledge?position={}", notes.token()))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(items[0]["knowledge_id"], notes.aggregate_id.to_string());
    assert_eq!(items[1]["title"], "Support policy");
    assert_eq!(items[1]["media_type"], "application/pdf");
    assert_eq!(items[1]["size_bytes"], pdf.len());
    assert!(
        items[1].get("text").is_none(),
        "the listing leaves texts out"
    );

    let one = format!("{q}/v1/knowledge/{}", policy.aggregate_id);
    let (status, doc) = member
        .get(format!("{one}?position={}", policy.token()))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert!(
        doc["text"]
            .as_str()
            .unwrap_or_default()
            .contains("within one business day"),
        "{doc}"
    );
    let original = reqwest::Client::new()
        .get(format!("{one}/original"))
        .bearer_auth(&member.token)
        .send()
        .await
        .expect("get the original");
    assert_eq!(original.status(), StatusCode::OK);
    assert_eq!(original.headers()["content-type"], "application/pdf");
    assert_eq!(
        original.headers()["etag"].to_str().unwrap_or_default(),
        format!("\"{}\"", doc["sha256"].as_str().unwrap_or_default())
    );
    assert_eq!(
        original.bytes().await.expect("body").as_ref(),
        pdf.as_slice()
    );

    // Another tenant's document does not exist here, even with its position.
    let (status, _) = member
        .get(format!("{q}/v1/knowledge/{}", theirs.aggregate_id))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = member
        .get(format!("{q}/v1/knowledge/{}/original", theirs.aggregate_id))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let mut admin = meta("acme");
    admin.reach = commands::Reach::Tenant;
    let removed = service
        .remove_knowledge(policy.aggregate_id, None, &admin)
        .await
        .expect("remove");
    let (status, _) = member
        .get(format!("{one}?position={}", removed.token()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, page) = member.get(format!("{q}/v1/knowledge")).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    projector.stop().await;
}

/// The query API answers as `access`'s rule says: every case of its conformance table
/// that can be written through commands (a conversation whose starter is recorded, a
/// knowledge document), read over HTTP as the case's viewer, one resource per tenant of
/// its own: a conversation, its messages, the listing, its live stream and a position
/// wait on it; a knowledge document and its listing. Seen is 200 and listed; not seen is
/// the 404 (or, for a position, the 503 `position_not_reached`) of what does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_http_api_sees_what_the_visibility_rule_says() {
    use access::{Kind, Reach};
    let stack = ReadStack::spawn().await;
    let service = stack.commands.service.clone();
    let projector = stack.read_model().await;
    let q = &stack.query_base;
    let mut checked = 0;
    for (scope, resource, seen) in access::conformance::CASES {
        let writable = match resource.kind {
            Kind::Conversation => resource.owner.is_some(),
            Kind::Knowledge => true,
            // Read by role (endpoints) and by user (inboxes), not through this rule.
            Kind::Inbox | Kind::WebhookEndpoint => false,
        };
        if !writable {
            continue;
        }
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let (scope_tenant, resource_tenant) = (
            format!("{}-{suffix}", scope.tenant),
            format!("{}-{suffix}", resource.tenant),
        );
        let mut meta = meta(&resource_tenant);
        let (path, list, position) = match resource.kind {
            Kind::Conversation => {
                meta.user_id = resource.owner.unwrap_or_default().to_owned();
                let started = service
                    .start_conversation("case".into(), Default::default(), &meta)
                    .await
                    .expect("start");
                let id = started.aggregate_id;
                let sent = service
                    .send_message(id, user_message("hello"), None, &meta)
                    .await
                    .expect("send");
                (
                    format!("/v1/conversations/{id}"),
                    "/v1/conversations",
                    sent.token().to_string(),
                )
            }
            _ => {
                let added =
                    add_knowledge(&service, &resource_tenant, "case", "text/plain", b"text").await;
                (
                    format!("/v1/knowledge/{}", added.aggregate_id),
                    "/v1/knowledge",
                    added.token().to_string(),
                )
            }
        };
        let events = scalar(&stack, "SELECT count(*) FROM events").await as u64;
        wait_until("the read model", || async {
            projector.status.borrow().applied >= events
        })
        .await;
        let roles = match scope.reach {
            Reach::Own => [Role::Member],
            Reach::Tenant => [Role::Admin],
        };
        let http = Http::as_user(&scope_tenant, scope.subject, &roles);
        let get = |url: String| http.get(url);
        let case = format!("{scope:?} {resource:?}");
        let (found, missing) = (StatusCode::OK, StatusCode::NOT_FOUND);
        let (status, body) = get(format!("{q}{path}")).await;
        assert_eq!(
            status,
            if *seen { found } else { missing },
            "{case}: {body}"
        );
        let (status, listed) = get(format!("{q}{list}")).await;
        assert_eq!(status, StatusCode::OK, "{case}: {listed}");
        assert_eq!(
            listed["items"].as_array().map_or(0, Vec::len),
            usize::from(*seen),
            "{case}: {listed}"
        );
        let (status, body) = get(format!("{q}{list}?position={position}&wait_ms=0")).await;
        if *seen {
            assert_eq!(status, StatusCode::OK, "position, {case}: {body}");
        } else {
            assert_eq!(
                (status, body["code"].as_str()),
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some("position_not_reached")
                ),
                "position, {case}"
            );
        }
        if resource.kind == Kind::Conversation {
            let (status, body) = get(format!("{q}{path}/messages")).await;
            assert_eq!(
                status,
                if *seen { found } else { missing },
                "{case}: {body}"
            );
            let stream = http
                .client
                .get(format!("{q}{path}/stream"))
                .bearer_auth(&http.token)
                .send()
                .await
                .expect("open the stream");
            assert_eq!(
                stream.status(),
                if *seen { found } else { missing },
                "stream, {case}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 8, "{checked} cases over HTTP");
    projector.stop().await;
}
