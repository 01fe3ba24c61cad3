//! Webhooks through the whole product as `dev/stack run` starts it: an admin subscribes a
//! receiver over the command API, events reach it signed; a message the receiver keeps
//! refusing dies on a short schedule, its endpoint's creator finds it in their in-app
//! notifications, marks it read, and reads their own write.

use e2e::caller::Caller;
use e2e::dev_stack::{DevStack, SECRET};
use platform::auth::Role;
use reqwest::StatusCode;
use serde_json::json;
use testkit::receiver::Receiver;
use testkit::stack::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscribed_receiver_gets_events_and_a_dead_message_reaches_the_owners_inbox() {
    let stack = DevStack::start(&[("WEBHOOK_RETRY_SCHEDULE", "0s,200ms")]).await;
    let (commands, queries) = (
        format!("http://{}", stack.commands),
        format!("http://{}", stack.queries),
    );
    let admin = Caller::new(SECRET.as_bytes(), "ada", &[Role::Admin]);
    let member = Caller::new(SECRET.as_bytes(), "mo", &[Role::Member]);
    let good = Receiver::start().await;
    let bad = Receiver::start().await;
    bad.set_down(Some(500));
    let mut endpoints = Vec::new();
    for url in [&good.url, &bad.url] {
        let (status, body) = admin
            .post(
                format!("{commands}/v1/webhooks/endpoints"),
                json!({"url": url, "event_types": ["conversation.started"]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        endpoints.push((
            body["id"].as_str().expect("id").to_owned(),
            body["secret"].as_str().expect("secret").to_owned(),
        ));
    }
    let (status, started) = member
        .post(
            format!("{commands}/v1/conversations"),
            json!({"title": "Hello hooks"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");

    wait_until("the delivery", || async {
        good.delivered_by("webhook-id").len() == 1
    })
    .await;
    let delivered = good.received().remove(0);
    assert_eq!(delivered.body["type"], "conversation.started");
    assert_eq!(delivered.body["data"]["conversation_id"], started["id"]);

    // The refusing receiver's message dies after two attempts; its creator is told.
    let inbox = format!("{queries}/v1/notifications?unread=true");
    wait_until("the owner's notification", || async {
        let (status, body) = admin.get(inbox.clone()).await;
        status == StatusCode::OK && body["items"][0]["kind"] == "webhook_message_failed"
    })
    .await;
    let (_, body) = admin.get(inbox.clone()).await;
    let notification = body["items"][0].clone();
    assert_eq!(notification["endpoint_id"], json!(endpoints[1].0));
    // Nobody else's inbox has it.
    let (_, others) = member.get(format!("{queries}/v1/notifications")).await;
    assert_eq!(others["items"], json!([]), "{others}");
    // The ledger shows both attempts.
    let (status, attempts) = admin
        .get(format!(
            "{queries}/v1/webhooks/endpoints/{}/attempts",
            endpoints[1].0
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{attempts}");
    assert_eq!(attempts.as_array().map(Vec::len), Some(2), "{attempts}");
    assert!(
        attempts
            .as_array()
            .into_iter()
            .flatten()
            .all(|a| a["status_code"] == 500)
    );

    let (status, read) = admin
        .post(
            format!("{commands}/v1/notifications/read"),
            json!({"notification_ids": [notification["notification_id"]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    let position = read["position"].as_str().expect("position");
    let (status, after) = admin.get(format!("{inbox}&position={position}")).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(
        after["items"],
        json!([]),
        "read notifications are not unread: {after}"
    );
    let (_, all) = admin
        .get(format!("{queries}/v1/notifications?position={position}"))
        .await;
    assert!(all["items"][0]["read_at"].is_string(), "{all}");
    // A member may not see the ledger.
    let (status, _) = member
        .get(format!(
            "{queries}/v1/webhooks/endpoints/{}/attempts",
            endpoints[1].0
        ))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    drop(stack);
}
