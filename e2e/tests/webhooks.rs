//! Webhooks through the whole product as `dev/stack run` starts it: an admin subscribes a
//! receiver over the command API, events reach it signed; a message the receiver keeps
//! refusing dies on a short schedule, its endpoint's creator finds it in their in-app
//! notifications, marks it read, and reads their own write; redelivered, it is no longer
//! counted dead; the ledger reads whole a page at a time.

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
    let started = member.start(&commands, "Hello hooks").await;

    wait_until("the delivery", || async {
        good.delivered_by("webhook-id").len() == 1
    })
    .await;
    let delivered = good.received().remove(0);
    assert_eq!(delivered.body["type"], "conversation.started");
    assert_eq!(delivered.body["data"]["conversation_id"], started.as_str());

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
    assert_eq!(
        attempts["items"].as_array().map(Vec::len),
        Some(2),
        "{attempts}"
    );
    assert!(
        attempts["items"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|a| a["status_code"] == 500)
    );

    // The endpoint counts its dead message until it is redelivered and delivered (the
    // death is reported, then marked in the ledger: the count follows the mark).
    let endpoint = format!("{queries}/v1/webhooks/endpoints/{}", endpoints[1].0);
    wait_until("the endpoint to count its dead message", || async {
        admin.get(endpoint.clone()).await.1["dead_messages"] == 1
    })
    .await;
    let (_, dead) = admin.get(format!("{endpoint}/messages?status=dead")).await;
    let dead_id = dead["items"][0]["message_id"].clone();
    assert!(dead_id.is_string(), "{dead}");
    bad.set_down(None);
    let (status, body) = admin
        .post(
            format!(
                "{commands}/v1/webhooks/endpoints/{}/redeliver",
                endpoints[1].0
            ),
            json!({"message_id": dead_id}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_until("the redelivery", || async {
        bad.delivered_by("webhook-id").len() == 1
    })
    .await;
    wait_until("the endpoint to count no dead message", || async {
        admin.get(endpoint.clone()).await.1["dead_messages"] == 0
    })
    .await;
    let (_, listed) = admin.get(format!("{queries}/v1/webhooks/endpoints")).await;
    assert!(
        listed["items"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| e["dead_messages"] == 0),
        "{listed}"
    );

    // The ledger reads whole, a page at a time: three more conversations, four messages
    // to the good receiver, one per page.
    for title in ["Two", "Three", "Four"] {
        member.start(&commands, title).await;
    }
    let messages = format!(
        "{queries}/v1/webhooks/endpoints/{}/messages",
        endpoints[0].0
    );
    // Received, then recorded: the ledger says delivered once each attempt is settled.
    wait_until("four deliveries recorded", || async {
        let (_, all) = admin
            .get(format!("{messages}?status=delivered&limit=100"))
            .await;
        good.delivered_by("webhook-id").len() == 4
            && all["items"].as_array().map(Vec::len) == Some(4)
    })
    .await;
    let mut seen = Vec::new();
    let mut next = format!("{messages}?status=delivered&limit=1");
    loop {
        let (status, page) = admin.get(next.clone()).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
        seen.push(
            page["items"][0]["message_id"]
                .as_str()
                .expect("an id")
                .to_owned(),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => next = format!("{messages}?status=delivered&limit=1&cursor={cursor}"),
            None => break,
        }
    }
    let mut delivered: Vec<String> = good.delivered_by("webhook-id").into_keys().collect();
    delivered.sort();
    let mut listed = seen.clone();
    listed.sort();
    assert_eq!(
        listed, delivered,
        "every message once, newest first: {seen:?}"
    );
    let (status, refused) = admin.get(format!("{messages}?cursor=nonsense")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["code"], "invalid_cursor");

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
