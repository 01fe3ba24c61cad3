//! A test kit for projections: given commands (which become events in the store, on
//! Kafka through the relay, and in the projector through its consumer group), then the
//! rows or the effects expected. Everything is real: PostgreSQL, the broker, the relay,
//! the projector runtime.
//!
//! ```ignore
//! let kit = Kit::start(Arc::new(TableSink(ReadModel))).await;
//! let c = kit.start_conversation("acme", "Plan").await;
//! kit.send("acme", c, "Ship in May").await;
//! kit.settle().await;
//! assert_eq!(kit.rows("SELECT title FROM {schema}.conversations").await, vec![json!({"title": "Plan"})]);
//! ```

use std::sync::Arc;

use projection::{Envelope, Sink};
use schemas::{CommitPosition, Event};
use serde_json::Value;
use uuid::Uuid;

use crate::commands::{meta, user_message};
use crate::stack::{RunningProjector, RunningRelay, Stack, wait_until};

pub struct Kit<S: Sink> {
    pub stack: Stack,
    pub sink: Arc<S>,
    pub relay: Option<RunningRelay>,
    pub projector: Option<RunningProjector>,
}

impl<S: Sink> Kit<S> {
    /// A fresh stack with the relay and a projector of `sink` running.
    pub async fn start(sink: Arc<S>) -> Kit<S> {
        let stack = Stack::new().await;
        let relay = stack.relay();
        let projector = stack.projector(sink.clone()).await;
        Kit {
            stack,
            sink,
            relay: Some(relay),
            projector: Some(projector),
        }
    }

    /// Given: a conversation of `tenant` started (by user `writer`).
    pub async fn start_conversation(&self, tenant: &str, title: &str) -> Uuid {
        self.stack
            .service
            .start_conversation(title.into(), Default::default(), &meta(tenant))
            .await
            .expect("start conversation")
            .aggregate_id
    }

    /// Given: a user message in a conversation of `tenant`.
    pub async fn send(&self, tenant: &str, conversation: Uuid, content: &str) {
        self.stack
            .service
            .send_message(conversation, user_message(content), None, &meta(tenant))
            .await
            .expect("send message");
    }

    /// Given: the conversation ended.
    pub async fn end(&self, tenant: &str, conversation: Uuid) {
        self.stack
            .service
            .end_conversation(conversation, None, None, &meta(tenant))
            .await
            .expect("end conversation");
    }

    /// Given: a summary generated from the conversation; returns the document id.
    pub async fn summarise(&self, tenant: &str, conversation: Uuid) -> Uuid {
        self.stack
            .service
            .generate_document(
                conversation,
                schemas::DocumentKind::Summary,
                None,
                &meta(tenant),
            )
            .await
            .expect("generate document")
            .aggregate_id
    }

    /// The live generation's schema.
    pub async fn schema(&self) -> String {
        projection::generation::live_schema_in(&self.stack.db.pool, self.sink.name())
            .await
            .expect("query")
            .expect("live generation")
    }

    /// Waits until every event in the store has reached the projection: applied, or
    /// parked.
    pub async fn settle(&self) {
        settle(&self.stack.db.pool, &self.schema().await).await;
    }

    /// Rows of `sql` as JSON objects; `{schema}` is replaced by the live generation's schema.
    pub async fn rows(&self, sql: &str) -> Vec<Value> {
        let sql = sql.replace("{schema}", &self.schema().await);
        let wrapped = format!("SELECT coalesce(json_agg(t), '[]'::json) FROM ({sql}) t");
        let value: Value = sqlx::query_scalar(&wrapped)
            .fetch_one(&self.stack.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        match value {
            Value::Array(rows) => rows,
            other => vec![other],
        }
    }

    /// Stops the projector and the relay gracefully.
    pub async fn stop(mut self) {
        if let Some(p) = self.projector.take() {
            p.stop().await;
        }
        if let Some(r) = self.relay.take() {
            r.stop().await;
        }
    }
}

/// `event` of tenant `acme` as a projection receives it, caused by `user`: for tests of a
/// projection's pure parts (what it plans for one event) without a stack.
pub fn envelope(event: Event, user: &str) -> Envelope {
    Envelope {
        event_id: Uuid::new_v4(),
        aggregate_type: event.event_type().aggregate().as_str().to_owned(),
        aggregate_id: event.aggregate_id().to_string(),
        sequence: 2,
        commit_position: CommitPosition {
            tx_id: 1,
            global: 1,
        },
        tenant_id: "acme".into(),
        user_id: Some(user.into()),
        actor: Some(user.into()),
        recorded_at: schemas::timestamp_now(),
        correlation_id: None,
        traceparent: None,
        erased: false,
        event,
    }
}

/// Waits until every event in the store has reached the projection whose live generation
/// is `schema`: applied, or parked.
pub async fn settle(pool: &sqlx::PgPool, schema: &str) {
    let sql = format!(
        "SELECT count(*) FROM events e
         LEFT JOIN {schema}.progress p USING (aggregate_type, aggregate_id)
         WHERE e.sequence > coalesce(p.last_sequence, 0)
           AND NOT EXISTS (SELECT 1 FROM {schema}.parked k
               WHERE k.aggregate_type = e.aggregate_type AND k.aggregate_id = e.aggregate_id
                 AND k.sequence = e.sequence)"
    );
    wait_until("the projection to settle", || {
        let (pool, sql) = (pool.clone(), sql.clone());
        async move {
            sqlx::query_scalar::<_, i64>(&sql)
                .fetch_one(&pool)
                .await
                .expect("settle query")
                == 0
        }
    })
    .await;
}
