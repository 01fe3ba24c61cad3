//! Forgetting a person through the whole product as `dev/stack run` starts it (personal
//! fields sealed under its local `DATA_MASTER_KEY`): Ann's conversation is answered by the
//! assistant, indexed, made into a document she is notified of, and delivered to a
//! webhook; Bob's too, in part. An admin erases Ann. Then no table of the database, no
//! search, no service log holds anything of hers in clear, the webhook receiver hears
//! `subject.erased`, her inbox is empty, Bob's data is untouched, and the audit chain
//! still verifies; rebuilding the read model and the semantic index afterwards shows
//! `[erased]` and indexes nothing of hers. Kafka's records, decoded with the published
//! contract, carry nobody's personal fields in clear: they are sealed, and hers for good.

use e2e::caller::Caller;
use e2e::dev_stack::{DevStack, SECRET};
use platform::auth::Role;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use reqwest::StatusCode;
use schemas::Event;
use schemas::personal::Pseudonym;
use serde_json::json;
use testkit::receiver::Receiver;
use testkit::stack::wait_until;

/// A word nobody else writes: what the scans look for.
fn marker(who: &str) -> String {
    format!("{who}{}", uuid::Uuid::new_v4().simple())
}

async fn search_snippets(admin: &Caller, queries: &str, q: &str) -> Vec<String> {
    let (status, body) = admin
        .get(format!("{queries}/v1/search?q={}", q.replace(' ', "+")))
        .await;
    if status != StatusCode::OK {
        return Vec::new();
    }
    body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["snippet"].as_str().map(str::to_owned))
        .collect()
}

/// Every table of the stack's database whose rows, as text, contain `needle`, with the
/// number of such rows.
async fn tables_holding(pool: &sqlx::PgPool, needle: &str) -> Vec<(String, i64)> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema, table_name FROM information_schema.tables
          WHERE table_type = 'BASE TABLE'
            AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(pool)
    .await
    .expect("the tables");
    let mut holding = Vec::new();
    for (schema, table) in tables {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{schema}\".\"{table}\" t WHERE t::text LIKE '%' || $1 || '%'"
        ))
        .bind(needle)
        .fetch_one(pool)
        .await
        .expect("a scan");
        if n > 0 {
            holding.push((format!("{schema}.{table}"), n));
        }
    }
    holding
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erased_person_is_gone_from_every_store_search_and_log_and_others_stay() {
    let stack = DevStack::start(&[]).await;
    let (commands, queries) = (
        format!("http://{}", stack.commands),
        format!("http://{}", stack.queries),
    );
    let admin = Caller::new(SECRET.as_bytes(), "ada", &[Role::Admin]);
    let ann = Caller::new(SECRET.as_bytes(), "ann", &[Role::Member]);
    let bob = Caller::new(SECRET.as_bytes(), "bob", &[Role::Member]);
    let receiver = Receiver::start().await;
    admin.subscribe(&commands, &receiver.url).await;

    // Ann's conversation: a title, a question the assistant answers, a document.
    let (hers, his) = (marker("ann"), marker("bob"));
    let conversation = ann
        .start_and_ask(
            &commands,
            &format!("Travel papers {hers}"),
            &format!("My passport number is {hers}, when does it expire?"),
        )
        .await;
    // Bob's, untouched by her erasure.
    bob.start_and_ask(
        &commands,
        &format!("Pricing {his}"),
        &format!("What does the plan {his} cost?"),
    )
    .await;

    // Everything has its copy: the assistant's reply, the index, the webhook receiver.
    let messages = format!("{queries}/v1/conversations/{conversation}/messages");
    wait_until("the assistant's reply to Ann", || async {
        let (_, body) = ann.get(messages.clone()).await;
        body["items"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["role"] == "assistant"))
    })
    .await;
    let (status, document) = ann
        .post(
            format!("{commands}/v1/conversations/{conversation}/documents"),
            json!({"kind": "summary"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{document}");
    wait_until("Ann's document in her inbox", || async {
        let (_, body) = ann.get(format!("{queries}/v1/notifications")).await;
        body["items"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["kind"] == "document_ready"))
    })
    .await;
    wait_until("her message in the index", || async {
        search_snippets(&admin, &queries, "passport number")
            .await
            .iter()
            .any(|s| s.contains(&hers))
    })
    .await;
    wait_until("his message in the index", || async {
        search_snippets(&admin, &queries, "what does the plan cost")
            .await
            .iter()
            .any(|s| s.contains(&his))
    })
    .await;
    wait_until("her message at the webhook receiver", || async {
        receiver
            .received()
            .iter()
            .any(|r| r.body["type"] == "message.sent" && r.body.to_string().contains(&hers))
    })
    .await;

    // Erased, by an admin, with a reason. A member may not.
    let erase = format!("{commands}/v1/admin/subjects/user:ann/erase");
    let (status, body) = ann
        .post(erase.clone(), json!({"reason": "forget me"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, erased) = admin
        .post(erase.clone(), json!({"reason": "deletion request 42"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    assert_eq!(
        erased["conversation_ids"],
        json!([conversation]),
        "{erased}"
    );
    assert_eq!(erased["keys_erased"], 1, "{erased}");
    assert_eq!(erased["subject"], "user:ann", "{erased}");

    // The projections remove their copies when the event reaches them.
    let read = format!("{queries}/v1/conversations/{conversation}");
    wait_until("the read model to erase her conversation", || async {
        let (_, body) = admin.get(read.clone()).await;
        body["title"] == "[erased]"
    })
    .await;
    wait_until("the index to forget her", || async {
        !search_snippets(&admin, &queries, "passport number")
            .await
            .iter()
            .any(|s| s.contains(&hers))
    })
    .await;
    wait_until("the receiver to hear of the erasure", || async {
        receiver
            .received()
            .iter()
            .any(|r| r.body["type"] == "subject.erased" && r.body["data"]["subject"] == "user:ann")
    })
    .await;
    wait_until("her inbox to be empty", || async {
        let (_, body) = ann.get(format!("{queries}/v1/notifications")).await;
        body["items"] == json!([])
    })
    .await;
    let (_, messages_now) = admin.get(messages.clone()).await;
    assert!(!messages_now.to_string().contains(&hers), "{messages_now}");

    // Nothing of hers in clear anywhere in the database; Bob's is where it was.
    let pool = sqlx::PgPool::connect(&stack.stack_env("DATABASE_URL"))
        .await
        .expect("the stack's database");
    wait_until("no table to hold anything of hers", || async {
        tables_holding(&pool, &hers).await.is_empty()
    })
    .await;
    // Nor where she acted: events and idempotency records name people by pseudonyms
    // only, and hers resolves no more.
    let named: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM events WHERE metadata->>'user_id' NOT LIKE 'pseudonym:%')
              + (SELECT count(*) FROM idempotency_keys WHERE user_id NOT LIKE 'pseudonym:%')
              + (SELECT count(*) FROM pseudonyms WHERE actor = 'ann')",
    )
    .fetch_one(&pool)
    .await
    .expect("a scan");
    assert_eq!(named, 0, "people named in clear where they acted");
    let his_tables = tables_holding(&pool, &his).await;
    assert!(
        his_tables.iter().any(|(t, _)| t.ends_with(".messages")),
        "{his_tables:?}"
    );
    assert!(
        search_snippets(&admin, &queries, "what does the plan cost")
            .await
            .iter()
            .any(|s| s.contains(&his))
    );

    // On Kafka: every record decodes with the contract; personal fields are sealed (hers
    // and his alike), so no record holds either in clear.
    let records = all_records(&stack, &pool).await;
    let mut sealed = 0;
    for (topic, event, headers) in &records {
        let text = serde_json::to_string(event).expect("json");
        // Who acted is a pseudonym: after the erasure, hers names nobody.
        assert!(
            headers
                .user_id
                .as_deref()
                .is_none_or(|u| Pseudonym::parse(u).is_some()),
            "{topic}: {headers:?}"
        );
        let headers = format!("{headers:?}");
        for marker in [&hers, &his] {
            assert!(
                !text.contains(marker.as_str()) && !headers.contains(marker.as_str()),
                "{topic}: {text} {headers}"
            );
        }
        sealed += usize::from(event.sealed().is_some());
    }
    assert!(sealed >= 6, "{sealed} sealed records of {}", records.len());

    // Nothing of hers in any service's log.
    let logs: Vec<_> = std::fs::read_dir(&stack.state)
        .expect("the stack's state")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert!(logs.len() >= 3, "{logs:?}");
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!text.contains(&hers), "{} holds her data", log.display());
    }

    // The history still proves itself: erasure deleted keys, never events.
    wait_until("the audit chain to verify", || async {
        let (status, body) = admin.get_text(format!("{queries}/v1/audit/verify")).await;
        status == StatusCode::OK && body.lines().last().is_some_and(|l| l.contains("\"end\""))
    })
    .await;
    // Rebuilt from the store, the read model shows her conversation erased and the index
    // has nothing of hers; Bob's is as it was.
    for projector in ["read-model-projector", "embeddings-projector"] {
        stack.run_against(projector, &["rebuild"]);
    }
    let (_, rebuilt) = admin.get(read.clone()).await;
    assert_eq!(rebuilt["title"], "[erased]", "{rebuilt}");
    assert!(
        !search_snippets(&admin, &queries, "passport number")
            .await
            .iter()
            .any(|s| s.contains(&hers))
    );
    wait_until("his message in the rebuilt index", || async {
        search_snippets(&admin, &queries, "what does the plan cost")
            .await
            .iter()
            .any(|s| s.contains(&his))
    })
    .await;
    assert_eq!(tables_holding(&pool, &hers).await, Vec::new());

    // Erasing again is harmless: nothing more to empty, the same conversation named.
    let (status, again) = admin.post(erase, json!({"reason": "asked twice"})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (
            again["keys_erased"].clone(),
            again["conversation_ids"].clone()
        ),
        (json!(0), json!([conversation])),
        "{again}"
    );
}

/// Every record on the stack's event topics (as many as the events table has events),
/// decoded with the contract: topic, event, headers as text.
async fn all_records(
    stack: &DevStack,
    pool: &sqlx::PgPool,
) -> Vec<(String, Event, schemas::EventHeaders)> {
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("a count");
    let kafka = stack.kafka();
    let consumer: StreamConsumer = kafka
        .consumer(
            "erasure-checker",
            &format!("erasure-checker-{}", uuid::Uuid::new_v4()),
        )
        .expect("a consumer");
    let topics: Vec<String> = schemas::AggregateKind::ALL
        .iter()
        .map(|k| k.topic(&kafka.topic_prefix))
        .collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).expect("subscribe");
    let mut seen = std::collections::HashSet::new();
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    while (seen.len() as i64) < stored {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {stored} events on Kafka", seen.len()))
            .expect("a record");
        let headers = kafka::headers::read(&msg).expect("the contract's headers");
        let value = msg.payload().expect("a value");
        let event = Event::decode(value).expect("decodes with the published contract");
        if seen.insert(headers.event_id) {
            records.push((msg.topic().to_owned(), event, headers));
        }
    }
    records
}
