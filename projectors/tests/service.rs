//! The projector binaries as processes, against a real PostgreSQL and a real broker.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

#[tokio::test]
async fn a_projector_whose_consumer_cannot_start_exits_instead_of_staying_healthy() {
    let db = testkit::env::database().await;
    // A table in the way of generation 1: the consumer fails as it starts.
    sqlx::query("CREATE SCHEMA read_model_g1")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE read_model_g1.conversations (squatter int)")
        .execute(&db.pool)
        .await
        .unwrap();
    let kafka = testkit::env::kafka();
    let addr = free_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_read-model-projector"))
        .env("DATABASE_URL", &db.config.url)
        .env("KAFKA_BROKERS", &kafka.brokers)
        .env("KAFKA_TOPIC_PREFIX", &kafka.topic_prefix)
        .env("PROJECTOR_ADDR", &addr)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start read-model-projector");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let healthz = reqwest::get(format!("http://{addr}/healthz"))
                .await
                .map(|r| r.status().to_string())
                .unwrap_or_else(|e| e.to_string());
            let _ = child.kill();
            panic!("the projector kept running (/healthz: {healthz}) although it consumes nothing");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "it exits with an error: {status}");
}
