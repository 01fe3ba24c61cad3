//! Test and benchmark environment: real PostgreSQL and a real Kafka-protocol broker, as
//! provided by `dev/stack test` / `dev/stack exec` (or `DATABASE_URL` / `KAFKA_BROKERS`).
//!
//! Each test gets its own database and its own topic prefix, so tests run in parallel
//! without seeing each other's data. A missing variable is a failure, never a skip.

use serde_json::{Map, Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::db::DbConfig;
use crate::kafka::KafkaConfig;

fn stack_var(name: &'static str) -> String {
    crate::config::var(name).unwrap_or_else(|| {
        panic!("{name} is not set: run tests through `dev/stack test` (see README), which starts PostgreSQL and the broker")
    })
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
        extra: Vec::new(),
    }
}

/// A consumer-group id no other test uses.
pub fn group(name: &str) -> String {
    format!("{name}-{}", Uuid::new_v4().simple())
}

/// Seeded input generator for fuzz tests (xorshift64*): odd strings (control, non-BMP,
/// bidi, quoting, very long), random JSON values and objects. Repeatable per seed.
pub struct FuzzRng(pub u64);

impl FuzzRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    pub fn string(&mut self) -> String {
        const PIECES: &[&str] = &[
            "",
            " ",
            "a",
            "hello",
            "\u{0}",
            "\n",
            "\t",
            "\u{7f}",
            "\u{1b}[31m",
            "é",
            "😀",
            "\u{fffd}",
            "\u{202e}",
            "'; DROP TABLE events; --",
            "{\"x\":1}",
            "\\",
            "\"",
            "user",
            "assistant",
            "system",
            "summary",
            "requirements_spec",
        ];
        let mut s = String::new();
        for _ in 0..self.below(6) {
            s.push_str(self.pick(PIECES));
        }
        if self.below(20) == 0 {
            s.push_str(&"x".repeat(self.below(40_000) as usize));
        }
        s
    }

    pub fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth > 3 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!(self.next_u64() as i64),
            3 => json!((self.next_u64() as f64) / 7.0),
            4 | 5 => json!(self.string()),
            6 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
            _ => Value::Object(self.object(depth + 1, &[])),
        }
    }

    /// An object that mostly has the endpoint's field names, with random values.
    pub fn object(&mut self, depth: u32, fields: &[&str]) -> Map<String, Value> {
        let mut m = Map::new();
        for f in fields {
            if self.below(5) != 0 {
                let v = match self.below(3) {
                    0 => json!(self.string()),
                    // A map of strings: the shape `metadata` takes.
                    1 => Value::Object(
                        (0..self.below(4))
                            .map(|_| (self.string(), json!(self.string())))
                            .collect(),
                    ),
                    _ => self.value(depth),
                };
                m.insert((*f).to_owned(), v);
            }
        }
        if self.below(4) == 0 {
            m.insert(self.string(), self.value(depth));
        }
        m
    }
}
