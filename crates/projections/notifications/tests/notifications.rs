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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_goes_through_a_real_smtp_server_once_per_notification_after_an_outage() {
    let smtp = testkit::smtp::SmtpServer::start().await;
    smtp.set_down(true);
    let channel = email_to(&smtp);
    let kit = Kit::start(Arc::new(EffectSink::new(Notifications::new(channel)))).await;
    let c = kit.start_conversation("acme", "Mail me").await;
    kit.send("acme", c, "Ship in May").await;
    kit.end("acme", c).await;
    // The relay refuses (451) for a while: nothing is lost, nothing is parked.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(smtp.mails().is_empty());
    smtp.set_down(false);
    kit.settle().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.to, ["writer@example.com"]);
    assert_eq!(mail.from, "noreply@threadline.test");
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("The conversation has ended")
    );
    let rows = kit
        .rows("SELECT notification_id::text AS id FROM {schema}.inbox")
        .await;
    let id = rows[0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        mail.header("Message-ID"),
        Some(format!("<{id}@threadline>"))
    );
    assert!(mail.data.contains(&c.to_string()), "{}", mail.data);
    assert_eq!(
        kit.rows("SELECT count(*) AS n FROM {schema}.parked").await,
        vec![json!({"n": 0})]
    );
    kit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_to_a_slow_relay_goes_out_side_by_side_once_each() {
    let smtp = testkit::smtp::SmtpServer::start().await;
    smtp.set_delay(Duration::from_millis(200));
    let channel = email_to(&smtp);
    let kit = Kit::start(Arc::new(EffectSink::new(Notifications::new(channel)))).await;
    let mut conversations = Vec::new();
    for i in 0..30 {
        conversations.push(kit.start_conversation("acme", &format!("Topic {i}")).await);
    }
    for c in &conversations {
        kit.end("acme", *c).await;
    }
    kit.settle().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 30, "one mail per ended conversation");
    let mut ids: Vec<String> = mails
        .iter()
        .filter_map(|m| m.header("Message-ID"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "no mail twice");
    // Thirty conversations, thirty aggregates: the relay was given several at once
    // (one after the other it would never see two), never more than the bound.
    let peak = smtp.peak_accepting();
    assert!(
        peak > 1 && peak <= notifications::CONCURRENCY,
        "{peak} messages at once"
    );
    kit.stop().await;
}

/// Email to `{user}@example.com` through `smtp`.
fn email_to(smtp: &testkit::smtp::SmtpServer) -> Channel {
    Channel::email(
        &smtp.url,
        "Threadline <noreply@threadline.test>",
        "{user}@example.com".into(),
        Duration::from_secs(5),
    )
    .expect("an email channel")
}
