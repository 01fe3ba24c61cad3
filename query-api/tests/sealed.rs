//! Personal fields sealed at rest (`DATA_MASTER_KEY`): the events table holds them only
//! sealed while every reader (the relay to Kafka and the read model behind it, audit
//! replays and folds) shows them in clear; once the person who started a conversation is
//! erased, replays show `[erased]` and a rebuilt read model has nothing of them, while
//! another person's conversation reads as before. Real PostgreSQL, real broker, real HTTP.

mod common;

use common::ReadStack;
use platform::auth::Role;
use projection::TableSink;
use read_model::ReadModel;
use schemas::Subject;
use serde_json::Value;
use testkit::commands::{meta, user_message};
use testkit::wait_until;

async fn get(stack: &ReadStack, path: &str) -> String {
    reqwest::Client::new()
        .get(format!("{}{path}", stack.query_base))
        .bearer_auth(stack.commands.token("acme", &[Role::Auditor]))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("a body")
}

async fn title_in_read_model(stack: &ReadStack, id: uuid::Uuid) -> Option<String> {
    let schema = stack.commands.live_schema("read_model").await;
    sqlx::query_scalar(&format!(
        "SELECT title FROM {schema}.conversations WHERE conversation_id = $1"
    ))
    .bind(id)
    .fetch_optional(&stack.commands.db.pool)
    .await
    .expect("the read model")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_fields_are_sealed_at_rest_read_in_clear_and_erased_with_their_person() {
    let stack = ReadStack::protected().await;
    let service = stack.commands.service.clone();
    let mut anns = meta("acme");
    anns.user_id = "ann".into();
    let ann = service
        .start_conversation("Ann's divorce plan".into(), Default::default(), &anns)
        .await
        .expect("started")
        .aggregate_id;
    service
        .send_message(ann, user_message("my address is 1 Elm Street"), None, &anns)
        .await
        .expect("sent");
    let mut bobs = meta("acme");
    bobs.user_id = "bob".into();
    let bob = service
        .start_conversation("Bob's pricing question".into(), Default::default(), &bobs)
        .await
        .expect("started")
        .aggregate_id;

    // At rest: sealed, nothing of it in clear.
    let pool = &stack.commands.db.pool;
    let (clear, sealed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE payload::text ~ '(Elm Street|divorce|Bob''s pricing)'),
                count(*) FILTER (WHERE payload::text LIKE '%\"sealed\"%')
           FROM events",
    )
    .fetch_one(pool)
    .await
    .expect("a scan");
    assert_eq!(
        (clear, sealed),
        (0, 3),
        "three events with personal fields, all sealed"
    );

    // Read in clear: the read model (through the relay and Kafka), audit replays, folds.
    let _projector = stack.read_model().await;
    wait_until("the read model has both conversations", || async {
        title_in_read_model(&stack, ann).await.is_some()
            && title_in_read_model(&stack, bob).await.is_some()
    })
    .await;
    assert_eq!(
        title_in_read_model(&stack, ann).await.as_deref(),
        Some("Ann's divorce plan")
    );
    let replay = get(&stack, &format!("/v1/audit/conversation/{ann}/events")).await;
    assert!(
        replay.contains("1 Elm Street") && !replay.contains("\"sealed\""),
        "{replay}"
    );
    let state: Value =
        serde_json::from_str(&get(&stack, &format!("/v1/audit/conversation/{ann}/state")).await)
            .expect("a state");
    assert_eq!(state["state"]["title"], "Ann's divorce plan", "{state}");
    // The live stream too: its events come opened, like every read.
    let mut stream = reqwest::Client::new()
        .get(format!(
            "{}/v1/conversations/{ann}/stream",
            stack.query_base
        ))
        .bearer_auth(stack.commands.token("acme", &[Role::Auditor]))
        .send()
        .await
        .expect("the stream");
    let mut live = String::new();
    while !live.contains("event: MessageSent")
        || !live[live.find("event: MessageSent").unwrap_or(0)..].contains("\n\n")
    {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), stream.chunk())
            .await
            .expect("the stream's next chunk in time")
            .expect("a chunk")
            .expect("the stream open");
        live.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        live.contains("Ann's divorce plan")
            && live.contains("1 Elm Street")
            && !live.contains("sealed"),
        "{live}"
    );

    // A service opens what Kafka carries sealed with the subject key the box names, from
    // the key endpoint, binding the event's identity as the contract documents it.
    let (payload, sequence): (Value, i64) = sqlx::query_as(
        "SELECT payload, sequence FROM events
          WHERE aggregate_id = $1 AND event_type = 'MessageSent'",
    )
    .bind(ann.to_string())
    .fetch_one(pool)
    .await
    .expect("her message");
    let sealed: schemas::SealedBox =
        serde_json::from_value(payload["MessageSent"]["sealed"].clone()).expect("a box");
    let key_url = format!(
        "{}/v1/keys/{}/{}",
        stack.query_base, sealed.key, sealed.generation
    );
    let as_role = |role| {
        reqwest::Client::new()
            .get(&key_url)
            .bearer_auth(stack.commands.token("acme", &[role]))
    };
    let member = as_role(Role::Member).send().await.expect("get");
    assert_eq!(member.status(), reqwest::StatusCode::FORBIDDEN);
    let view: Value = as_role(Role::Service)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("a key");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key =
        sealing::Key::from_slice(&b64.decode(view["key"].as_str().expect("key")).expect("b64"))
            .expect("32 bytes");
    let associated = format!("conversation\0{ann}\0{sequence}\0MessageSent");
    let clear = key
        .open(
            &b64.decode(&sealed.sealed).expect("b64"),
            associated.as_bytes(),
        )
        .expect("it opens");
    let fields: Value = serde_json::from_slice(&clear).expect("JSON fields");
    assert_eq!(fields["content"], "my address is 1 Elm Street", "{fields}");

    // A snapshot of her conversation is a plaintext copy of its state: the erasure
    // deletes it.
    let snapshot = event_store::snapshots::Snapshot {
        sequence: 2,
        state: serde_json::json!({"tenant_id": "acme", "title": "Ann's divorce plan"}),
    };
    event_store::snapshots::save(pool, "conversation", &ann.to_string(), 1, &snapshot)
        .await
        .expect("a snapshot");

    // Only an admin erases, and says why.
    let refused = service
        .erase(Subject::User("ann".into()), "mine".into(), &anns)
        .await;
    assert!(
        matches!(
            refused,
            Err(commands::CommandError::Domain(
                domain::DomainError::NotFound
            ))
        ),
        "{refused:?}"
    );
    let admin = testkit::commands::admin_meta("acme");
    let silent = service
        .erase(Subject::User("ann".into()), " ".into(), &admin)
        .await;
    assert!(
        matches!(silent, Err(commands::CommandError::Domain(_))),
        "{silent:?}"
    );
    let title = title_in_read_model(&stack, ann).await;
    assert_eq!(
        title.as_deref(),
        Some("Ann's divorce plan"),
        "nothing erased yet"
    );

    // Ann erased: her conversation reads as erased everywhere it is read from the store.
    let erased = service
        .erase(
            Subject::User("ann".into()),
            "deletion request 42".into(),
            &admin,
        )
        .await
        .expect("erased");
    assert_eq!(erased.snapshots_deleted, 1);
    let Some(schemas::Event::SubjectErased(record)) = erased.accepted.events.first() else {
        panic!("{erased:?}");
    };
    assert_eq!(
        (
            record.keys_erased,
            record.conversations(),
            record.erased_by.as_str()
        ),
        (1, vec![ann], "ada"),
        "the key of the conversation she started"
    );
    assert_eq!(
        event_store::snapshots::latest(pool, "conversation", &ann.to_string(), 1)
            .await
            .expect("read"),
        None
    );
    // The read model hears of it through Kafka and blanks its copy; Bob's stays.
    wait_until("the read model to erase her conversation", || async {
        title_in_read_model(&stack, ann).await.as_deref() == Some("[erased]")
    })
    .await;
    let schema = stack.commands.live_schema("read_model").await;
    let left: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.messages WHERE content LIKE '%Elm Street%'"
    ))
    .fetch_one(pool)
    .await
    .expect("a scan");
    assert_eq!(left, 0);
    // Again: harmless, recorded, nothing more emptied.
    let again = service
        .erase(Subject::User("ann".into()), "asked twice".into(), &admin)
        .await
        .expect("erased again");
    let Some(schemas::Event::SubjectErased(repeated)) = again.accepted.events.first() else {
        panic!("{again:?}");
    };
    assert_eq!(
        (repeated.keys_erased, repeated.conversations()),
        (0, vec![ann])
    );
    assert_eq!(again.accepted.version, schemas::Version(2));
    // Her key is gone for services too.
    let gone = as_role(Role::Service).send().await.expect("get");
    assert_eq!(gone.status(), reqwest::StatusCode::NOT_FOUND);
    let replay = get(&stack, &format!("/v1/audit/conversation/{ann}/events")).await;
    assert!(
        !replay.contains("Elm Street") && !replay.contains("divorce"),
        "{replay}"
    );
    assert!(replay.contains("[erased]"), "{replay}");
    let state: Value =
        serde_json::from_str(&get(&stack, &format!("/v1/audit/conversation/{ann}/state")).await)
            .expect("a state");
    assert_eq!(state["state"]["title"], "[erased]", "{state}");
    let tenant_replay = get(&stack, "/v1/audit/events").await;
    assert!(!tenant_replay.contains("divorce"), "{tenant_replay}");
    assert!(
        tenant_replay.contains("Bob's pricing question"),
        "{tenant_replay}"
    );

    // A rebuild by a process whose master key does not open the stored keys stops before
    // its switch: nothing parked, the live read model as it was.
    let live = stack.commands.live_schema("read_model").await;
    let stranger =
        sealing::Keyring::from_text(&sealing::Keyring::generate_text().expect("randomness"))
            .expect("a key");
    let refused = projection::rebuild(
        event_store::Reader::new(pool.clone(), Some(stranger)),
        &TableSink(ReadModel),
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(stack.commands.live_schema("read_model").await, live);

    // A rebuilt read model has nothing of her; Bob's conversation is as it was.
    projection::rebuild(service.reader().clone(), &TableSink(ReadModel))
        .await
        .expect("rebuilt");
    assert_eq!(
        title_in_read_model(&stack, ann).await.as_deref(),
        Some("[erased]")
    );
    assert_eq!(
        title_in_read_model(&stack, bob).await.as_deref(),
        Some("Bob's pricing question")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_data_protection_nothing_is_erased_and_the_caller_is_told() {
    let stack = testkit::Stack::new().await;
    let refused = stack
        .service
        .erase(
            Subject::User("ann".into()),
            "deletion request".into(),
            &testkit::commands::admin_meta("acme"),
        )
        .await;
    assert!(
        matches!(refused, Err(commands::CommandError::DataProtectionOff)),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_erased_reads_erased_everywhere_and_another_tenant_does_not() {
    let stack = ReadStack::protected().await;
    let service = stack.commands.service.clone();
    let pool = &stack.commands.db.pool;
    let mut anns = meta("acme");
    anns.user_id = "ann".into();
    let ann = service
        .start_conversation("Acme's merger".into(), Default::default(), &anns)
        .await
        .expect("started")
        .aggregate_id;
    let knowledge = testkit::commands::add_knowledge(
        &service,
        "acme",
        "Acme handbook",
        "text/plain",
        b"Acme pays on Fridays.",
    )
    .await
    .aggregate_id;
    let mut globex_meta = meta("globex");
    globex_meta.user_id = "gil".into();
    let globex = service
        .start_conversation("Globex's launch".into(), Default::default(), &globex_meta)
        .await
        .expect("started")
        .aggregate_id;
    let _projector = stack.read_model().await;
    let schema = || async { stack.commands.live_schema("read_model").await };
    let knowledge_title = || async {
        let s = schema().await;
        sqlx::query_scalar::<_, String>(&format!(
            "SELECT title FROM {s}.knowledge WHERE knowledge_id = $1"
        ))
        .bind(knowledge)
        .fetch_optional(pool)
        .await
        .expect("the read model")
    };
    wait_until("the read model has all of it", || async {
        title_in_read_model(&stack, ann).await.is_some()
            && title_in_read_model(&stack, globex).await.is_some()
            && knowledge_title().await.is_some()
    })
    .await;

    // The original is sealed at rest and read in clear through the API.
    let pool_clear: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM blobs WHERE position('Fridays'::bytea in bytes) > 0)
              + (SELECT count(*) FROM sealed_blobs WHERE position('Fridays'::bytea in sealed) > 0)",
    )
    .fetch_one(pool)
    .await
    .expect("a scan");
    assert_eq!(pool_clear, 0, "the original is in clear at rest");
    let original = format!("/v1/knowledge/{knowledge}/original");
    assert_eq!(get(&stack, &original).await, "Acme pays on Fridays.");

    let admin = testkit::commands::admin_meta("acme");
    let erased = service
        .erase(Subject::Tenant, "offboarding, ticket 7".into(), &admin)
        .await
        .expect("erased");
    let Some(schemas::Event::SubjectErased(record)) = erased.accepted.events.first() else {
        panic!("{erased:?}");
    };
    assert!(record.is_tenant(), "{record:?}");
    assert_eq!(
        record.keys_erased, 3,
        "her conversation's key, the tenant's knowledge key and the tenant key"
    );
    assert!(record.conversation_ids.is_empty(), "{record:?}");
    assert_eq!(erased.blobs_deleted, 1, "the handbook's original");
    let gone = reqwest::Client::new()
        .get(format!("{}{original}", stack.query_base))
        .bearer_auth(stack.commands.token("acme", &[Role::Auditor]))
        .send()
        .await
        .expect("get");
    assert_eq!(gone.status(), reqwest::StatusCode::NOT_FOUND);

    // Read from the store: erased. The read model blanks its copies; Globex is untouched.
    let replay = get(&stack, "/v1/audit/events").await;
    assert!(
        !replay.contains("merger") && !replay.contains("Fridays") && !replay.contains("handbook"),
        "{replay}"
    );
    wait_until("the read model to blank the tenant", || async {
        title_in_read_model(&stack, ann).await.as_deref() == Some("[erased]")
            && knowledge_title().await.as_deref() == Some("[erased]")
    })
    .await;
    assert_eq!(
        title_in_read_model(&stack, globex).await.as_deref(),
        Some("Globex's launch")
    );
    let s = schema().await;
    let text: String = sqlx::query_scalar(&format!(
        "SELECT text FROM {s}.knowledge WHERE knowledge_id = $1"
    ))
    .bind(knowledge)
    .fetch_one(pool)
    .await
    .expect("the read model");
    assert_eq!(text, "[erased]");
    // Data written for the tenant afterwards is sealed under keys of a new generation.
    let after = service
        .start_conversation("A new start".into(), Default::default(), &anns)
        .await
        .expect("started")
        .aggregate_id;
    let state: Value =
        serde_json::from_str(&get(&stack, &format!("/v1/audit/conversation/{after}/state")).await)
            .expect("a state");
    assert_eq!(state["state"]["title"], "A new start", "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_exports_everything_of_theirs_and_nothing_of_anyone_else() {
    let stack = ReadStack::protected().await;
    let service = stack.commands.service.clone();
    let mut anns = meta("acme");
    anns.user_id = "ann".into();
    let mut ids = Vec::new();
    for title in ["Ann's garden", "Ann's taxes"] {
        let id = service
            .start_conversation(title.into(), Default::default(), &anns)
            .await
            .expect("started")
            .aggregate_id;
        service
            .send_message(id, user_message(&format!("notes on {title}")), None, &anns)
            .await
            .expect("sent");
        ids.push(id);
    }
    let document = service
        .generate_document(ids[0], schemas::DocumentKind::Summary, None, &anns)
        .await
        .expect("a document")
        .aggregate_id;
    let mut bobs = meta("acme");
    bobs.user_id = "bob".into();
    service
        .start_conversation("Bob's boat".into(), Default::default(), &bobs)
        .await
        .expect("started");
    let _projector = stack.read_model().await;
    let schema = stack.commands.live_schema("read_model").await;
    wait_until("the read model has her document", || async {
        sqlx::query_scalar::<_, i64>(&format!(
            "SELECT count(*) FROM {schema}.documents WHERE document_id = $1"
        ))
        .bind(document)
        .fetch_one(&stack.commands.db.pool)
        .await
        .is_ok_and(|n| n == 1)
    })
    .await;

    let export = |subject: &'static str, roles: &'static [Role]| {
        let token =
            testkit::tokens::hs256_token(testkit::tokens::SECRET, "acme", subject, roles, 600);
        let url = format!("{}/v1/subjects/user:ann/export", stack.query_base);
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("get");
            (response.status(), response.text().await.expect("a body"))
        }
    };
    let (status, body) = export("ann", &[Role::Member]).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let head = &lines[0]["export"];
    assert_eq!(head["subject"], "user:ann", "{body}");
    assert_eq!(head["conversations"], serde_json::json!(ids), "{body}");
    assert_eq!(head["documents"], serde_json::json!([document]), "{body}");
    // Her two conversations (started, message) and the document, in clear; nothing of Bob.
    for text in [
        "Ann's garden",
        "notes on Ann's taxes",
        "\"DocumentGenerated\"",
    ] {
        assert!(body.contains(text), "{text} missing: {body}");
    }
    assert!(!body.contains("Bob's boat"), "{body}");
    let events = lines.len() - 2;
    assert!(events >= 5, "{body}");
    assert_eq!(
        lines.last().expect("a trailer")["end"]["count"],
        events,
        "{body}"
    );
    // Bob may not export her; an admin may.
    let (status, _) = export("bob", &[Role::Member]).await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
    let (status, by_admin) = export("ada", &[Role::Admin]).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(by_admin.contains("notes on Ann's garden"), "{by_admin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_erases_conversations_ended_longer_ago_than_the_policy_keeps_them() {
    let stack = ReadStack::protected().await;
    let service = stack.commands.service.clone();
    let mut anns = meta("acme");
    anns.user_id = "ann".into();
    let mut started = Vec::new();
    for title in ["Ann's old plan", "Ann's old question", "Ann's open matter"] {
        started.push(
            service
                .start_conversation(title.into(), Default::default(), &anns)
                .await
                .expect("started")
                .aggregate_id,
        );
    }
    for id in &started[..2] {
        service
            .end_conversation(*id, None, None, &anns)
            .await
            .expect("ended");
    }
    let admin = testkit::commands::admin_meta("acme");
    // Only an admin sets it, within its range.
    assert!(service.set_retention(Some(30), &anns).await.is_err());
    assert!(service.set_retention(Some(0), &admin).await.is_err());
    let policy = service
        .set_retention(Some(30), &admin)
        .await
        .expect("set")
        .expect("a policy");
    assert_eq!(
        (policy.conversations_ended_days, policy.set_by.as_str()),
        (30, "ada")
    );

    // The clock is the caller's: ten days on, nothing is due; thirty-one days on, the
    // two ended conversations go and the open one stays.
    let now = chrono::Utc::now();
    let early = service
        .apply_retention(now + chrono::Duration::days(10))
        .await
        .expect("applied");
    assert!(early.iter().all(|a| a.erased.is_empty()), "{early:?}");
    let applied = service
        .apply_retention(now + chrono::Duration::days(31))
        .await
        .expect("applied");
    let mut erased: Vec<_> = applied.iter().flat_map(|a| a.erased.clone()).collect();
    erased.sort();
    let mut ended = started[..2].to_vec();
    ended.sort();
    assert_eq!(erased, ended);
    let title = |id: uuid::Uuid| {
        let stack = &stack;
        async move {
            let state: Value = serde_json::from_str(
                &get(stack, &format!("/v1/audit/conversation/{id}/state")).await,
            )
            .expect("a state");
            state["state"]["title"].clone()
        }
    };
    assert_eq!(title(started[0]).await, "[erased]");
    assert_eq!(title(started[1]).await, "[erased]");
    assert_eq!(title(started[2]).await, "Ann's open matter");
    // Each erasure is recorded, by `retention`, with the policy as its reason.
    let replay = get(&stack, "/v1/audit/events?types=SubjectErased").await;
    let by_retention = replay
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["payload"]["SubjectErased"]["erased_by"] == "retention")
        .count();
    assert_eq!(by_retention, 2, "{replay}");
    assert!(
        replay.contains("retention: ended more than 30 days ago"),
        "{replay}"
    );
    // Applied again: nothing more; the policy says what it did.
    let again = service
        .apply_retention(now + chrono::Duration::days(40))
        .await
        .expect("applied");
    assert!(again.iter().all(|a| a.erased.is_empty()), "{again:?}");
    let policy = commands::retention::policy(stack.commands.service.reader(), "acme")
        .await
        .expect("read")
        .expect("a policy");
    assert_eq!(policy.erased_total, 2);
    assert_eq!(
        policy.last_applied_at.map(|t| t.timestamp()),
        Some((now + chrono::Duration::days(40)).timestamp())
    );
    // Removed: nothing applies any more.
    assert_eq!(
        service.set_retention(None, &admin).await.expect("removed"),
        None
    );
}

/// The audit replay line of the event of `aggregate` at `sequence`.
fn replayed(replay: &str, aggregate: &str, sequence: i64) -> Value {
    replay
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["aggregate_id"] == aggregate && l["sequence"] == sequence)
        .unwrap_or_else(|| panic!("no {aggregate}/{sequence} in {replay}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_stored_as_pseudonyms_where_they_act_and_name_nobody_once_erased() {
    let stack = ReadStack::protected().await;
    let service = stack.commands.service.clone();
    let pool = &stack.commands.db.pool;
    let mut anns = meta("acme");
    anns.user_id = "ann".into();
    anns.idempotency = Some(commands::Idempotency::new(
        "start-1".into(),
        "POST /v1/conversations",
        &"Ann's plan",
    ));
    let ann = service
        .start_conversation("Ann's plan".into(), Default::default(), &anns)
        .await
        .expect("started");
    // The same key again is her first request's answer: the record is found by her
    // pseudonym.
    let again = service
        .start_conversation("Ann's plan".into(), Default::default(), &anns)
        .await
        .expect("replayed");
    assert!(again.replayed, "{again:?}");
    assert_eq!(again.aggregate_id, ann.aggregate_id);
    let ann = ann.aggregate_id;
    anns.idempotency = None;
    service
        .mark_notifications_read(vec![uuid::Uuid::new_v4()], &anns)
        .await
        .expect("read");
    let cys = commands::RequestMeta {
        user_id: "cy".into(),
        ..testkit::commands::admin_meta("acme")
    };
    let endpoint = service
        .create_webhook_endpoint(
            commands::NewEndpoint {
                url: "http://127.0.0.1:9/hook".into(),
                event_types: vec!["*".into()],
                description: None,
            },
            &cys,
        )
        .await
        .expect("endpoint")
        .aggregate_id;

    // At rest, in the idempotency records and in the Kafka headers: pseudonyms only.
    let (named, pseudonymous): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE metadata::text ~ '\"(ann|cy)\"' OR payload::text ~ '\"(ann|cy)\"'),
                count(*) FILTER (WHERE metadata->>'user_id' LIKE 'pseudonym:%')
           FROM events",
    )
    .fetch_one(pool)
    .await
    .expect("a scan");
    assert_eq!((named, pseudonymous), (0, 3), "three events, nobody named");
    let owners: Vec<String> = sqlx::query_scalar("SELECT user_id FROM idempotency_keys")
        .fetch_all(pool)
        .await
        .expect("the records");
    assert!(
        owners.len() == 1 && owners[0].starts_with("pseudonym:"),
        "{owners:?}"
    );
    let anns_pseudonym = owners[0].clone();

    // Read through the one reader: people by their ids. The read model over Kafka...
    let _projector = stack.read_model().await;
    let schema = stack.commands.live_schema("read_model").await;
    let created_by = || async {
        sqlx::query_scalar::<_, String>(&format!(
            "SELECT created_by FROM {schema}.webhook_endpoints WHERE endpoint_id = $1"
        ))
        .bind(endpoint)
        .fetch_optional(pool)
        .await
        .expect("the read model")
    };
    wait_until("the read model to have the endpoint", || async {
        created_by().await.is_some()
    })
    .await;
    assert_eq!(created_by().await.as_deref(), Some("cy"));
    // ...audit replays (metadata and payload)...
    let replay = get(&stack, "/v1/audit/events").await;
    assert_eq!(
        replayed(&replay, &ann.to_string(), 1)["metadata"]["user_id"],
        "ann"
    );
    let created = replayed(&replay, &endpoint.to_string(), 1);
    assert_eq!(created["metadata"]["user_id"], "cy", "{created}");
    assert_eq!(
        created["payload"]["WebhookEndpointCreated"]["created_by"], "cy",
        "{created}"
    );
    // ...and a service reading the topics resolves a pseudonym; nobody else does.
    let resolve = |pseudonym: &str, role| {
        reqwest::Client::new()
            .get(format!("{}/v1/pseudonyms/{pseudonym}", stack.query_base))
            .bearer_auth(stack.commands.token("acme", &[role]))
            .send()
    };
    let view: Value = resolve(&anns_pseudonym, Role::Service)
        .await
        .expect("get")
        .json()
        .await
        .expect("a view");
    assert_eq!(view["actor"], "ann", "{view}");
    let member = resolve(&anns_pseudonym, Role::Member).await.expect("get");
    assert_eq!(member.status(), reqwest::StatusCode::FORBIDDEN);
    let garbage = resolve("ann", Role::Service).await.expect("get");
    assert_eq!(garbage.status(), reqwest::StatusCode::BAD_REQUEST);

    // Ann and Cy erased: what named them names nobody; Ada (who erased) still resolves.
    let admin = testkit::commands::admin_meta("acme");
    for person in ["ann", "cy"] {
        service
            .erase(
                Subject::User(person.into()),
                "deletion request".into(),
                &admin,
            )
            .await
            .expect("erased");
    }
    let gone = resolve(&anns_pseudonym, Role::Service).await.expect("get");
    assert_eq!(gone.status(), reqwest::StatusCode::NOT_FOUND);
    let left: Vec<String> = sqlx::query_scalar("SELECT actor FROM pseudonyms ORDER BY actor")
        .fetch_all(pool)
        .await
        .expect("the pseudonyms");
    assert_eq!(left, vec!["ada".to_owned()]);
    let replay = get(&stack, "/v1/audit/events").await;
    assert_eq!(
        replayed(&replay, &ann.to_string(), 1)["metadata"]["user_id"],
        "[erased]"
    );
    let created = replayed(&replay, &endpoint.to_string(), 1);
    assert_eq!(
        created["payload"]["WebhookEndpointCreated"]["created_by"], "[erased]",
        "{created}"
    );
    assert!(!replay.contains("\"cy\""), "{replay}");
    wait_until(
        "the read model to forget who created the endpoint",
        || async { created_by().await.as_deref() == Some("[erased]") },
    )
    .await;
}
