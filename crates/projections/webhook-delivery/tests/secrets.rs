//! A signing secret is shown once, to the admin who created or rotated it, and never
//! appears in clear anywhere else: not in the events (the store, hence Kafka and the
//! audit API), not in the read model, not in the delivery ledger, not in the logs of the
//! services that handle it. This test binary captures every log line of its process.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use commands::NewEndpoint;
use projection::TableSink;
use read_model::ReadModel;
use testkit::projection::Kit;
use testkit::receiver::Receiver;
use testkit::stack::wait_until;
use tokio::sync::watch;
use webhook_delivery::{DeliverySettings, Dispatcher, Fanout, Schedule};

/// Every log line of the process, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_secret_is_nowhere_in_clear_after_creation_rotation_and_deliveries() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let kit = Kit::start(Arc::new(TableSink(Fanout::new(Duration::ZERO)))).await;
    webhook_delivery::migrate(&kit.stack.db.pool)
        .await
        .expect("ledger migrations");
    let reads = kit.stack.projector(Arc::new(TableSink(ReadModel))).await;
    let receiver = Receiver::start().await;
    let commands = commands::CommandService::new(
        kit.stack.db.pool.clone(),
        Arc::new(commands::TemplateGenerator),
    );
    let (stop, stopped) = watch::channel(false);
    let dispatcher = Dispatcher::new(
        kit.stack.db.pool.clone(),
        commands,
        DeliverySettings {
            webhooks: testkit::webhooks::settings(),
            schedule: Schedule::parse("0s").expect("a schedule"),
            timeout: Duration::from_secs(2),
            concurrency: 4,
            per_endpoint: 2,
            lease: Duration::from_secs(5),
            poll: Duration::from_millis(50),
            disable_after: chrono::Duration::hours(1),
        },
    )
    .expect("the HTTP client");
    let dispatching = tokio::spawn(dispatcher.run(stopped));

    let admin = testkit::commands::admin_meta("acme");
    let service = &kit.stack.service;
    let created = service
        .create_webhook_endpoint(
            NewEndpoint {
                url: receiver.url.clone(),
                event_types: vec!["*".into()],
                description: None,
            },
            &admin,
        )
        .await
        .expect("created");
    let first = service
        .revealed_secret(&created)
        .expect("opens")
        .expect("a secret")
        .expose();
    let rotated = service
        .rotate_webhook_secret(
            created.aggregate_id,
            chrono::Duration::hours(1),
            None,
            &admin,
        )
        .await
        .expect("rotated");
    let second = service
        .revealed_secret(&rotated)
        .expect("opens")
        .expect("a secret")
        .expose();
    assert_ne!(first, second);
    let c = kit.start_conversation("acme", "Hello").await;
    kit.send("acme", c, "something to deliver").await;
    wait_until("two deliveries", || async {
        receiver.delivered_by("webhook-id").len() == 2
    })
    .await;
    // Both secrets sign during the grace window.
    let signatures = receiver.received()[0]
        .header("webhook-signature")
        .unwrap_or_default()
        .to_owned();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    kit.settle().await;
    // The read model is a consumer of its own: it has its rows once it has every event.
    let schema = kit.stack.live_schema("read_model").await;
    testkit::projection::settle(&kit.stack.db.pool, &schema).await;
    let _ = stop.send(true);
    let _ = dispatching.await;
    reads.stop().await;

    let mut places = vec![("logs".to_owned(), logs.text())];
    for (name, sql) in [
        (
            "events",
            "SELECT coalesce(string_agg(payload::text || metadata::text, ' '), '') FROM events",
        ),
        (
            "ledger messages",
            "SELECT coalesce(string_agg(row_to_json(m)::text, ' '), '') FROM webhook_messages m",
        ),
        (
            "ledger attempts",
            "SELECT coalesce(string_agg(row_to_json(a)::text, ' '), '') FROM webhook_attempts a",
        ),
    ] {
        let text: String = sqlx::query_scalar(sql)
            .fetch_one(&kit.stack.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        places.push((name.to_owned(), text));
    }
    // Every table of the read model's live generation.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(&schema)
    .fetch_all(&kit.stack.db.pool)
    .await
    .expect("the read model's tables");
    assert!(
        tables.iter().any(|t| t == "webhook_endpoints"),
        "{tables:?}"
    );
    for table in tables {
        let sql = format!(
            "SELECT coalesce(string_agg(row_to_json(t)::text, ' '), '') FROM {schema}.{table} t"
        );
        let text: String = sqlx::query_scalar(&sql)
            .fetch_one(&kit.stack.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        places.push((format!("read model {table}"), text));
    }
    assert!(
        places
            .iter()
            .any(|(name, text)| name == "events" && text.contains("sealed_secret"))
    );
    assert!(
        places
            .iter()
            .any(|(name, text)| name == "read model webhook_endpoints"
                && text.contains(&receiver.url))
    );
    for secret in [&first, &second] {
        let key = secret.trim_start_matches("whsec_");
        for (name, text) in &places {
            assert!(!text.contains(key), "the secret is in clear in {name}");
        }
    }
    kit.stop().await;
}
