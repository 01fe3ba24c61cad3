//! The live stream of a conversation the read model has not applied yet (a client that
//! opens it right after starting the conversation): it is opened for whoever may see the
//! conversation and shows the events once they are applied, instead of 404 (which made
//! clients reconnect in a loop); nobody else gets it.

mod common;

use common::ReadStack;
use platform::auth::Role;
use testkit::commands::meta;
use testkit::tokens::{SECRET, hs256_token};

async fn open(stack: &ReadStack, id: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/v1/conversations/{id}/stream", stack.query_base))
        .bearer_auth(token)
        .send()
        .await
        .expect("open the stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_opened_before_the_read_model_has_the_conversation_waits_for_it() {
    let stack = ReadStack::spawn().await;
    // The read model's tables exist, and nothing applies new events for now.
    stack.read_model().await.stop().await;
    let mut ann = meta("acme");
    ann.user_id = "ann".into();
    let id = stack
        .commands
        .service
        .start_conversation("Just started".into(), Default::default(), &ann)
        .await
        .expect("start")
        .aggregate_id
        .to_string();
    let token =
        |tenant: &str, who: &str, roles: &[Role]| hs256_token(SECRET, tenant, who, roles, 600);

    let mut stream = open(&stack, &id, &token("acme", "ann", &[Role::Member])).await;
    assert_eq!(stream.status(), 200);
    // Not the starter, another tenant, no such conversation: 404, as before.
    for (tenant, who, target) in [
        ("acme", "bob", id.clone()),
        ("globex", "ann", id.clone()),
        ("acme", "ann", uuid::Uuid::now_v7().to_string()),
    ] {
        let refused = open(&stack, &target, &token(tenant, who, &[Role::Member])).await;
        assert_eq!(refused.status(), 404, "{tenant}/{who}");
    }
    // An admin of the tenant sees it too.
    let admin = open(&stack, &id, &token("acme", "boss", &[Role::Admin])).await;
    assert_eq!(admin.status(), 200);

    // Once the read model applies the event, the open stream shows it.
    let _read_model = stack.read_model().await;
    let mut buffer = String::new();
    let seen = e2e_read_until(&mut stream, &mut buffer, "ConversationStarted").await;
    assert!(seen.contains("id: 1"), "{seen}");
}

/// Reads the stream until an event of type `event` arrived; the text read.
async fn e2e_read_until(resp: &mut reqwest::Response, buffer: &mut String, event: &str) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !buffer.contains(&format!("event: {event}")) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {event} within 30 s: {buffer}"))
            .expect("read the stream")
            .unwrap_or_else(|| panic!("the stream ended: {buffer}"));
        buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    }
    buffer.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_members_streams_do_not_lock_the_tenants_admin_out() {
    let stack = ReadStack::spawn().await;
    let _read_model = stack.read_model().await;
    let mut ann = meta("acme");
    ann.user_id = "ann".into();
    let id = stack
        .commands
        .service
        .start_conversation("Busy".into(), Default::default(), &ann)
        .await
        .expect("start")
        .aggregate_id
        .to_string();
    let member = hs256_token(SECRET, "acme", "ann", &[Role::Member], 600);
    let admin = hs256_token(SECRET, "acme", "boss", &[Role::Admin], 600);
    // The member opens as many streams as one user may (the tenant allows 100)...
    let mut held = Vec::new();
    for _ in 0..query_api::http::live::PER_SUBJECT {
        let stream = open(&stack, &id, &member).await;
        assert_eq!(stream.status(), 200);
        held.push(stream);
    }
    let refused = open(&stack, &id, &member).await;
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.expect("a problem");
    assert_eq!(body["code"], "too_many_streams");
    // ...and the admin of the tenant still gets one.
    assert_eq!(open(&stack, &id, &admin).await.status(), 200);
    // A stream closed gives its slot back.
    held.pop();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let again = open(&stack, &id, &member).await;
        if again.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
