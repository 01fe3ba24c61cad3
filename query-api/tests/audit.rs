//! Audit replays from the event store: NDJSON streams with trailers, and state as of a
//! version or time, against a real PostgreSQL through the real HTTP server.

mod common;

use common::ReadStack;
use cqrs_es::{AggregateContext, EventStore};
use domain::Conversation;
use domain::state::ConversationState;
use futures::StreamExt;
use platform::auth::Role;
use query_api::audit::{self, TenantFilter};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::commands::{meta, user_message};
use uuid::Uuid;

async fn get_lines(stack: &ReadStack, tenant: &str, path: &str) -> (StatusCode, Vec<Value>) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", stack.query_base))
        .bearer_auth(stack.commands.token(tenant, &[Role::Auditor]))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    if status != StatusCode::OK {
        return (
            status,
            vec![serde_json::from_str(&text).unwrap_or(Value::Null)],
        );
    }
    assert!(text.ends_with('\n'), "every line ends with a newline");
    (
        status,
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect(),
    )
}

/// A stream's NDJSON, read to its end, line by line.
async fn ndjson(
    stream: impl futures::Stream<Item = Result<axum::body::Bytes, std::convert::Infallible>>,
) -> Vec<Value> {
    let text: Vec<String> = stream
        .map(|chunk| String::from_utf8_lossy(&chunk.unwrap()).into_owned())
        .collect()
        .await;
    text.concat()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The command side's own view of the aggregate right now.
async fn command_side_state(stack: &ReadStack, id: Uuid) -> Value {
    let s = event_store::store::<Conversation>(&event_store::Appender::start(
        stack.commands.db.pool.clone(),
    ));
    let mut ctx = s.load_aggregate(&id.to_string()).await.unwrap();
    serde_json::to_value(ConversationState::from(&*ctx.aggregate())).unwrap()
}

#[tokio::test]
async fn replaying_an_aggregate_gives_back_exactly_the_appended_events_and_states() {
    let stack = ReadStack::without_relay().await;
    let service = stack.commands.service.clone();
    let id = service
        .start_conversation("Audit me".into(), Default::default(), &meta("acme"))
        .await
        .unwrap()
        .aggregate_id;
    let mut states = vec![command_side_state(&stack, id).await];
    for text in ["a", "b", "c"] {
        service
            .send_message(id, user_message(text), None, &meta("acme"))
            .await
            .unwrap();
        states.push(command_side_state(&stack, id).await);
    }
    service
        .rename_conversation(id, "Audited".into(), None, &meta("acme"))
        .await
        .unwrap();
    states.push(command_side_state(&stack, id).await);
    service
        .end_conversation(id, Some("done".into()), None, &meta("acme"))
        .await
        .unwrap();
    states.push(command_side_state(&stack, id).await);

    let (status, lines) = get_lines(
        &stack,
        "acme",
        &format!("/v1/audit/conversation/{id}/events"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (trailer, events) = lines.split_last().unwrap();
    assert_eq!(trailer["end"]["count"], 6, "{trailer}");
    let stored: Vec<(Uuid, i64, String, Value)> = sqlx::query_as(
        "SELECT event_id, sequence, event_type, payload FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id.to_string())
    .fetch_all(&stack.commands.db.pool)
    .await
    .unwrap();
    assert_eq!(events.len(), stored.len());
    for (line, (event_id, sequence, event_type, payload)) in events.iter().zip(&stored) {
        assert_eq!(line["event_id"], event_id.to_string());
        assert_eq!(line["sequence"], *sequence);
        assert_eq!(line["event_type"], event_type.as_str());
        assert_eq!(&line["payload"], payload);
        assert_eq!(line["metadata"]["tenant_id"], "acme");
    }

    for (i, expected) in states.iter().enumerate() {
        let version = i + 1;
        let resp = reqwest::Client::new()
            .get(format!(
                "{}/v1/audit/conversation/{id}/state?version={version}",
                stack.query_base
            ))
            .bearer_auth(stack.commands.token("acme", &[Role::Auditor]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let view: Value = resp.json().await.unwrap();
        assert_eq!(view["version"], version);
        assert_eq!(&view["state"], expected, "state at version {version}");
    }
    // The public form, as the read models spell it: not the aggregate's internal enum.
    assert_eq!(states[0]["status"], "open");
    assert_eq!(states.last().unwrap()["status"], "ended");
    // As of a time: the time of the rename's event gives the state at version 5.
    let renamed_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT recorded_at FROM events WHERE aggregate_id = $1 AND sequence = 5",
    )
    .bind(id.to_string())
    .fetch_one(&stack.commands.db.pool)
    .await
    .unwrap();
    let at = renamed_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B");
    let view: Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/audit/conversation/{id}/state?at={at}",
            stack.query_base
        ))
        .bearer_auth(stack.commands.token("acme", &[Role::Auditor]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (view["version"].clone(), view["state"].clone()),
        (json!(5), states[4].clone())
    );

    // Beyond the last version, another tenant, a member without the auditor role: refused.
    let (status, _) = get_lines(
        &stack,
        "acme",
        &format!("/v1/audit/conversation/{id}/state?version=7"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get_lines(
        &stack,
        "globex",
        &format!("/v1/audit/conversation/{id}/events"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let member = reqwest::Client::new()
        .get(format!(
            "{}/v1/audit/conversation/{id}/events",
            stack.query_base
        ))
        .bearer_auth(stack.commands.token("acme", &[Role::Member]))
        .send()
        .await
        .unwrap();
    assert_eq!(member.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_tenant_replay_is_in_global_order_filtered_and_resumable() {
    let stack = ReadStack::without_relay().await;
    let service = stack.commands.service.clone();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            service
                .start_conversation(format!("c{i}"), Default::default(), &meta("acme"))
                .await
                .unwrap()
                .aggregate_id,
        );
        service
            .start_conversation(format!("other {i}"), Default::default(), &meta("globex"))
            .await
            .unwrap();
    }
    for (n, id) in ids.iter().cycle().take(9).enumerate() {
        service
            .send_message(*id, user_message(&format!("m{n}")), None, &meta("acme"))
            .await
            .unwrap();
    }
    // A replay shows the events older than every transaction still running in the
    // cluster (so it never skips one that commits late); another test's long insert may
    // hold the newest back for a moment.
    testkit::stack::wait_until("the tenant's 12 events replayed", || async {
        let (_, lines) = get_lines(&stack, "acme", "/v1/audit/events").await;
        lines.last().map(|t| t["end"]["count"] == 12) == Some(true)
    })
    .await;
    let (_, lines) = get_lines(&stack, "acme", "/v1/audit/events").await;
    let (trailer, events) = lines.split_last().unwrap();
    assert_eq!(trailer["end"]["count"], 12);
    assert!(
        events.iter().all(|e| e["metadata"]["tenant_id"] == "acme"),
        "only the caller's tenant"
    );
    let positions: Vec<(u64, i64)> = events
        .iter()
        .map(|e| {
            let (tx, g) = e["position"].as_str().unwrap().split_once('.').unwrap();
            (tx.parse().unwrap(), g.parse().unwrap())
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing positions"
    );

    let (_, only) = get_lines(&stack, "acme", "/v1/audit/events?types=ConversationStarted").await;
    assert_eq!(only.last().unwrap()["end"]["count"], 3);
    let resume_from = events[4]["position"].as_str().unwrap();
    let (_, rest) = get_lines(
        &stack,
        "acme",
        &format!("/v1/audit/events?after={resume_from}"),
    )
    .await;
    assert_eq!(rest.len() - 1, 7);
    assert_eq!(rest[0]["event_id"], events[5]["event_id"]);
    let (status, body) = get_lines(&stack, "acme", "/v1/audit/events?types=Nope").await;
    assert_eq!(
        (status, body[0]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_event_type"))
    );
    // A cursor from beyond this cluster's transactions (handed out before a restore).
    let (status, body) = get_lines(&stack, "acme", "/v1/audit/events?after=9000000000000.1").await;
    assert_eq!(
        (status, body[0]["code"].clone()),
        (
            StatusCode::BAD_REQUEST,
            json!("position_from_another_cluster")
        )
    );
}

#[tokio::test]
async fn a_stream_whose_database_fails_part_way_ends_with_an_error_line() {
    let stack = ReadStack::without_relay().await;
    let service = stack.commands.service.clone();
    let id = service
        .start_conversation("long".into(), Default::default(), &meta("acme"))
        .await
        .unwrap()
        .aggregate_id;
    // Five pages: the stream reads at most two ahead of what it sent.
    let total = 5 * audit::PAGE;
    append_messages(&stack, id, total - 1).await;
    let pool = stack.commands.db.pool.clone();
    let mut stream = Box::pin(audit::tenant_events(
        pool.clone().into(),
        "acme".into(),
        TenantFilter::default(),
        std::time::Duration::from_secs(60),
    ));
    let first = stream.next().await.expect("a first page").unwrap();
    let mut sent = String::from_utf8_lossy(&first).lines().count() as i64;
    assert_eq!(sent, audit::PAGE, "one page");
    pool.close().await; // the database goes away mid-stream
    let mut rest = String::new();
    while let Some(chunk) = stream.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let mut lines: Vec<&str> = rest.lines().collect();
    let last: Value = serde_json::from_str(lines.pop().expect("a trailer")).unwrap();
    sent += lines.len() as i64;
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
    assert_eq!(last["error"]["count"], sent, "the count is what was sent");
    assert!(sent < total, "{sent} of {total} events sent");
    assert!(last.get("end").is_none());
}

/// Appends `n` user messages to a conversation in one statement (sequences 2..=n+1), the
/// way the command side stores them: a conversation far longer than any page.
async fn append_messages(stack: &ReadStack, id: Uuid, n: i64) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'conversation', $1, s, 'MessageSent', '1',
                jsonb_build_object('MessageSent', jsonb_build_object(
                    'conversation_id', $1, 'message_id', gen_random_uuid(), 'role', 'user',
                    'content', 'message ' || s || ' ' || repeat('x', 200),
                    'model', NULL, 'prompt_tokens', NULL, 'completion_tokens', NULL,
                    'sent_at', (extract(epoch from now()) * 1000)::bigint)),
                jsonb_build_object('tenant_id', 'acme', 'user_id', 'writer', 'correlation_id', 'bulk',
                                   'causation_id', 'bulk', 'command', 'SendMessage')
         FROM generate_series(2, $2 + 1) AS s",
    )
    .bind(id.to_string())
    .bind(n)
    .execute(&stack.commands.db.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conversation_of_ten_thousand_messages_is_replayed_summarised_and_folded_page_by_page() {
    let stack = ReadStack::without_relay().await;
    let service = stack.commands.service.clone();
    let id = service
        .start_conversation("Long".into(), Default::default(), &meta("acme"))
        .await
        .unwrap()
        .aggregate_id;
    append_messages(&stack, id, 10_000).await;

    // Summarised from a transcript read page by page, into a bounded document.
    let doc = service
        .generate_document(id, schemas::DocumentKind::Summary, None, &meta("acme"))
        .await
        .unwrap();
    let schemas::Event::DocumentGenerated(d) = &doc.events[0] else {
        panic!("{:?}", doc.events[0]);
    };
    assert_eq!(d.source_message_count, 10_000);
    assert!(d.content.contains("10000 messages; the last 200"));
    assert!(d.content.len() < 80_000, "{} bytes", d.content.len());

    // Replayed as a stream of pages.
    let (status, lines) = get_lines(
        &stack,
        "acme",
        &format!("/v1/audit/conversation/{id}/events"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lines.len(), 10_002, "10,001 events and the trailer");
    assert_eq!(lines[10_001]["end"]["count"], 10_001);

    // Folded page by page, to a version and to a time.
    let state = |query: String| {
        let stack = &stack;
        async move {
            let resp = reqwest::Client::new()
                .get(format!(
                    "{}/v1/audit/conversation/{id}/state?{query}",
                    stack.query_base
                ))
                .bearer_auth(stack.commands.token("acme", &[Role::Auditor]))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<Value>().await.unwrap()
        }
    };
    let at_9500 = state("version=9500".into()).await;
    assert_eq!(
        (
            at_9500["version"].clone(),
            at_9500["state"]["message_count"].clone()
        ),
        (json!(9500), json!(9499))
    );
    let latest = state(String::new()).await;
    assert_eq!(latest["state"]["message_count"], 10_000);
    let t: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT recorded_at FROM events WHERE aggregate_id = $1 AND sequence = 1",
    )
    .bind(id.to_string())
    .fetch_one(&stack.commands.db.pool)
    .await
    .unwrap();
    let at_start = state(format!(
        "at={}",
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    ))
    .await;
    assert_eq!(
        at_start["version"], 1,
        "the messages were recorded after the start"
    );
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_answers_503_with_retry_after() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://threadline@127.0.0.1:1/gone")
        .unwrap();
    let store = std::sync::Arc::new(vectors::pg::PgStore::migrated(pool.clone()));
    let app = query_api::http::router(query_api::http::AppState {
        search: std::sync::Arc::new(semantic_index::Search::new(pool.clone(), store, Vec::new())),
        reads: std::sync::Arc::new(read_model::Reads::new(pool.clone())),
        events: event_store::Reader::plain(pool.clone()),
        auth: testkit::tokens::authenticator(),
        read_wait_max: std::time::Duration::from_secs(1),
        stream_max: std::time::Duration::from_secs(60),
        streams: std::sync::Arc::new(tokio::sync::Semaphore::new(32)),
        analytics: std::sync::Arc::new(analytics::queries::Usage::new(pool.clone())),
        live: query_api::http::live::LiveStreams::new(100),
        progress: None,
        edge: platform::edge::EdgeConfig::permissive(),
    });
    let (base, server) = testkit::serve(app).await;
    let token = testkit::tokens::token("acme", &[Role::Member, Role::Auditor]);
    let id = Uuid::new_v4();
    for path in [
        "/v1/conversations".to_owned(),
        format!("/v1/conversations/{id}"),
        "/v1/audit/events".to_owned(),
        format!("/v1/audit/conversation/{id}/events"),
        format!("/v1/audit/conversation/{id}/state"),
        "/v1/search?q=anything".to_owned(),
    ] {
        let resp = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(resp.headers()["retry-after"], "1", "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "database_unavailable", "{path}: {body}");
    }
    server.abort();
}

#[tokio::test]
async fn a_stream_that_reaches_its_time_limit_ends_with_a_resumable_line() {
    let stack = ReadStack::without_relay().await;
    stack
        .commands
        .service
        .start_conversation("c".into(), Default::default(), &meta("acme"))
        .await
        .unwrap();
    let lines = ndjson(audit::tenant_events(
        stack.commands.db.pool.clone().into(),
        "acme".into(),
        TenantFilter::default(),
        std::time::Duration::ZERO,
    ))
    .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["error"]["code"], "stream_time_limit");
}

#[tokio::test]
async fn streams_beyond_the_limit_and_hidden_operational_routes_are_refused() {
    let stack = ReadStack::without_relay().await;
    let id = stack
        .commands
        .service
        .start_conversation("c".into(), Default::default(), &meta("acme"))
        .await
        .unwrap()
        .aggregate_id;
    let mut edge = platform::edge::EdgeConfig::permissive();
    edge.expose_metrics = false;
    edge.expose_docs = false;
    let pool = stack.commands.db.pool.clone();
    let store = std::sync::Arc::new(vectors::pg::PgStore::migrated(pool.clone()));
    let app = query_api::http::router(query_api::http::AppState {
        search: std::sync::Arc::new(semantic_index::Search::new(pool.clone(), store, Vec::new())),
        reads: std::sync::Arc::new(read_model::Reads::new(pool.clone())),
        events: event_store::Reader::plain(pool.clone()),
        auth: testkit::tokens::authenticator(),
        read_wait_max: std::time::Duration::from_secs(1),
        stream_max: std::time::Duration::from_secs(60),
        // Every place taken.
        streams: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
        analytics: std::sync::Arc::new(analytics::queries::Usage::new(pool.clone())),
        live: query_api::http::live::LiveStreams::new(0),
        progress: None,
        edge,
    });
    let (base, server) = testkit::serve(app).await;
    let token = testkit::tokens::token("acme", &[Role::Auditor]);
    for path in [
        "/v1/audit/events".to_owned(),
        format!("/v1/audit/conversation/{id}/events"),
    ] {
        let resp = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(resp.headers().contains_key("retry-after"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "too_many_streams");
    }
    for path in ["/metrics", "/openapi.json", "/docs/"] {
        let resp = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path} is not served");
    }
    server.abort();
}

/// Chains every committed event (what command-api's keeper does as commits arrive).
async fn chain_everything(stack: &ReadStack) {
    let pool = &stack.commands.db.pool;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pending = event_store::chain::state(pool, "", 0)
            .await
            .unwrap()
            .pending;
        if pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} events left unchained"
        );
        if event_store::chain::extend(pool, 1000).await.unwrap() == 0 {
            // Held back by a transaction still open elsewhere in the cluster.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn the_audit_chain_is_shown_verified_resumed_and_names_a_rewritten_event() {
    let stack = ReadStack::without_relay().await;
    let service = stack.commands.service.clone();
    let mut ids = Vec::new();
    for tenant in ["acme", "globex", "acme"] {
        let id = service
            .start_conversation("Chained".into(), Default::default(), &meta(tenant))
            .await
            .unwrap()
            .aggregate_id;
        for text in ["one", "two"] {
            service
                .send_message(id, user_message(text), None, &meta(tenant))
                .await
                .unwrap();
        }
        ids.push(id);
    }
    chain_everything(&stack).await;
    let pool = &stack.commands.db.pool;
    event_store::chain::record_heads(pool).await.unwrap();

    let auditor = stack.commands.token("acme", &[Role::Auditor]);
    let http = reqwest::Client::new();
    let view: Value = http
        .get(format!("{}/v1/audit/chain", stack.query_base))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // acme: two conversations of three events each.
    assert_eq!(view["tip"]["n"], 6, "{view}");
    assert_eq!(view["recorded"][0]["link"], view["tip"]["link"]);
    assert_eq!(view["pending_events"], 0);

    let (status, lines) = get_lines(&stack, "acme", "/v1/audit/verify").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        lines,
        vec![json!({"end": {"verified": true, "checked": 6, "through": 6,
            "link": view["tip"]["link"], "heads_matched": 1}})]
    );
    let (_, lines) = get_lines(&stack, "acme", "/v1/audit/verify?after=4").await;
    assert_eq!(
        lines[0]["end"]["checked"], 2,
        "resumed after link 4: {lines:?}"
    );
    let (status, lines) = get_lines(&stack, "acme", "/v1/audit/verify?after=7").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(lines[0]["code"], "invalid_after");
    let member = stack.commands.token("acme", &[Role::Member]);
    let refused = http
        .get(format!("{}/v1/audit/verify", stack.query_base))
        .bearer_auth(&member)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // Page by page: a progress line for each full page, then the end.
    let paged = ndjson(audit::verify_chain(
        pool.clone(),
        "acme".into(),
        0,
        4,
        std::time::Duration::from_secs(60),
    ))
    .await;
    assert_eq!(paged[0], json!({"progress": {"checked": 4, "through": 4}}));
    assert_eq!(paged[1]["end"]["checked"], 6, "{paged:?}");

    // The second message of acme's second conversation rewritten behind the trigger.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET payload = jsonb_set(payload, '{content}', '\"changed\"')
          WHERE aggregate_id = $1 AND sequence = 3",
    )
    .bind(ids[2].to_string())
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (_, lines) = get_lines(&stack, "acme", "/v1/audit/verify").await;
    let broken = &lines[0]["broken"];
    assert_eq!(broken["n"], 6, "{lines:?}");
    assert_eq!(broken["reason"], "altered");
    assert_eq!(broken["aggregate_id"], ids[2].to_string());
    assert_eq!(broken["sequence"], 3);
    assert_eq!(broken["through"], 5);
    // Another tenant's chain still holds.
    let (_, lines) = get_lines(&stack, "globex", "/v1/audit/verify").await;
    assert_eq!(lines[0]["end"]["checked"], 3, "{lines:?}");
}
