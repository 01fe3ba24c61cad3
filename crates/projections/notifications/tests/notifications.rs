//! The notifications projection through the test kit: given commands, the notifications
//! a real HTTP receiver gets and the inbox rows expected.

use std::sync::Arc;
use std::time::Duration;

use notifications::{Channel, Notifications};
use projection::EffectSink;
use serde_json::json;
use testkit::projection::Kit;
use testkit::receiver::Receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generated_summary_and_an_ended_conversation_notify_the_user_once_each() {
    let receiver = Receiver::start().await;
    let sink = EffectSink::new(Notifications::new(
        Channel::http(receiver.url.clone(), Duration::from_secs(5)).expect("receiver URL"),
    ));
    let kit = Kit::start(Arc::new(sink)).await;
    let c = kit.start_conversation("acme", "Launch plan").await;
    kit.send("acme", c, "Ship in May").await;
    let doc = kit.summarise("acme", c).await;
    kit.end("acme", c).await;
    kit.settle().await;

    let received = receiver.received();
    // Two aggregates, two topics: their notifications may arrive in either order.
    let mut bodies: Vec<_> = received
        .iter()
        .map(|r| {
            let mut b = r.body.clone();
            let id = b["id"].as_str().unwrap_or_default().to_owned();
            assert_eq!(
                r.idempotency_key.as_deref(),
                Some(id.as_str()),
                "the key is the id"
            );
            b.as_object_mut().map(|o| {
                o.remove("id");
                o.remove("occurred_at")
            });
            b
        })
        .collect();
    bodies.sort_by_key(|b| b["kind"].to_string());
    assert_eq!(
        bodies,
        vec![
            json!({"tenant_id": "acme", "kind": "conversation_ended", "recipient": "writer",
                   "subject": "The conversation has ended",
                   "conversation_id": c, "document_id": null, "endpoint_id": null}),
            json!({"tenant_id": "acme", "kind": "document_ready", "recipient": "writer",
                   "subject": "Your document \"Summary: Launch plan\" is ready",
                   "conversation_id": c, "document_id": doc, "endpoint_id": null}),
        ]
    );
    assert_eq!(
        kit.rows("SELECT kind, recipient FROM {schema}.inbox ORDER BY kind")
            .await,
        vec![
            json!({"kind": "conversation_ended", "recipient": "writer"}),
            json!({"kind": "document_ready", "recipient": "writer"}),
        ]
    );
    kit.stop().await;
}
