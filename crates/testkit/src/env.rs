//! Test and benchmark environment: real PostgreSQL and a real Kafka-protocol broker, as
//! provided by `dev/stack test` / `dev/stack exec` (or `DATABASE_URL` / `KAFKA_BROKERS`).
//!
//! Each test gets its own database and its own topic prefix, so tests run in parallel
//! without seeing each other's data. A missing variable is a failure, never a skip.

use kafka::KafkaConfig;
use platform::db::DbConfig;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

fn stack_var(name: &'static str) -> String {
    var(name).unwrap_or_else(|| {
        panic!("{name} is not set: run tests through `dev/stack test` (see README), which starts PostgreSQL and the broker")
    })
}

/// The variable `dev/stack` set, if set and not empty.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A benchmark's or test's knob: the variable parsed, or `default` when it is not set.
///
/// # Panics
/// When it is set and does not parse: the message names it.
pub fn knob<T>(name: &str, default: T) -> T
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => default,
        Some(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is invalid: {e}")),
    }
}

/// A database created for one test.
pub struct TestDatabase {
    pub name: String,
    pub config: DbConfig,
    pub pool: PgPool,
}

/// Creates an empty database in the stack's cluster.
pub async fn database() -> TestDatabase {
    let admin_url = stack_var("DATABASE_URL");
    let name = format!("test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL {admin_url}: {e}"));
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let _ = admin.close().await;
    let url = match admin_url.rsplit_once('/') {
        Some((server, db)) => {
            let query = db
                .split_once('?')
                .map(|(_, q)| format!("?{q}"))
                .unwrap_or_default();
            format!("{server}/{name}{query}")
        }
        None => panic!("DATABASE_URL {admin_url} has no database path"),
    };
    let config = DbConfig {
        url,
        max_connections: 40,
        statement_timeout: std::time::Duration::from_secs(60),
    };
    let pool = config
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {name}: {e}"));
    TestDatabase { name, config, pool }
}

/// Kafka settings for one test: the stack's broker, a topic prefix no other test uses,
/// one partition per topic unless the test says otherwise, and short fetch waits.
pub fn kafka() -> KafkaConfig {
    KafkaConfig {
        brokers: stack_var("KAFKA_BROKERS"),
        topic_prefix: format!("t{}.", Uuid::new_v4().simple()),
        partitions: 3,
        replication: 1,
        fetch_wait_max_ms: 10,
        message_max_bytes: 1_000_000,
        request_timeout: std::time::Duration::from_secs(30),
        extra: Vec::new(),
    }
}

/// A consumer-group id no other test uses.
pub fn group(name: &str) -> String {
    format!("{name}-{}", Uuid::new_v4().simple())
}
