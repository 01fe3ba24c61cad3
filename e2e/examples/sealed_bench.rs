//! What sealing personal fields costs the readers that open every row: a tenant's audit
//! replay (NDJSON over HTTP) and a rebuild of the read model, on a stack whose events are
//! sealed (`DATA_MASTER_KEY`) beside one whose are not, the same events on each, in one
//! run. `SEALED_EVENTS` sets the size (default 200,000 messages over 200 conversations).
//! Run against a fresh stack (see docs/benchmarks.md):
//!
//!     dev/stack exec -- cargo run --release -p e2e --example sealed_bench

use std::time::Instant;

use e2e::Services;
use event_store::protect::EventAt;
use platform::auth::Role;
use projection::TableSink;
use read_model::ReadModel;
use serde_json::json;

const CONVERSATIONS: usize = 200;

/// Writes `n` messages over `CONVERSATIONS` conversations of tenant `bench` straight to
/// the events table, each sealed as the command service would when the stack is
/// protected, in statements of 10,000 rows.
async fn seed(stack: &Services, n: usize) {
    let reader = stack.commands.stack.service.reader().clone();
    let ids: Vec<uuid::Uuid> = (0..CONVERSATIONS).map(|_| uuid::Uuid::new_v4()).collect();
    let mut rows = Vec::new();
    for (c, id) in ids.iter().enumerate() {
        rows.push((*id, 1i64, "ConversationStarted", json!({"ConversationStarted": {
            "conversation_id": id, "tenant_id": "bench", "title": format!("conversation {c}"),
            "metadata": {}, "started_at": 1_700_000_000_000_i64, "started_by": format!("user{c}")
        }})));
    }
    for s in 0..n / CONVERSATIONS {
        for id in &ids {
            rows.push((
                *id,
                s as i64 + 2,
                "MessageSent",
                json!({"MessageSent": {
                    "conversation_id": id, "message_id": uuid::Uuid::new_v4(), "role": "user",
                    "content": format!("message {s} about the launch plan and its budget"),
                    "sent_at": 1_700_000_000_000_i64
                }}),
            ));
        }
    }
    // Who wrote them, as the command service stores it: a pseudonym when sealed.
    let writer = match reader.protector() {
        Some(protector) => protector
            .pseudonym("bench", "writer")
            .await
            .expect("a pseudonym"),
        None => "writer".to_owned(),
    };
    for chunk in rows.chunks_mut(10_000) {
        let (mut types, mut ids, mut seqs, mut events, mut payloads, mut metas) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (id, sequence, event_type, payload) in chunk.iter_mut() {
            let id_text = id.to_string();
            if let Some(protector) = reader.protector() {
                let at = EventAt {
                    tenant: "bench",
                    aggregate_type: "conversation",
                    aggregate_id: &id_text,
                    sequence: *sequence,
                    event_type,
                };
                protector.seal(&at, payload).await.expect("seals");
            }
            types.push("conversation".to_owned());
            ids.push(id_text);
            seqs.push(*sequence);
            events.push(event_type.to_string());
            payloads.push(payload.clone());
            metas.push(json!({"tenant_id": "bench", "user_id": writer}));
        }
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT t, i, s, e, '1', p, m
               FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::jsonb[], $6::jsonb[])
                    AS u(t, i, s, e, p, m)",
        )
        .bind(&types)
        .bind(&ids)
        .bind(&seqs)
        .bind(&events)
        .bind(&payloads)
        .bind(&metas)
        .execute(&stack.commands.stack.db.pool)
        .await
        .expect("seed");
    }
}

/// The tenant's replay over HTTP, read to its end: events per second.
async fn replay(stack: &Services, expected: usize) -> f64 {
    let token = stack.commands.token("bench", &[Role::Auditor]);
    let started = Instant::now();
    let mut resp = reqwest::Client::new()
        .get(format!("{}/v1/audit/events", stack.query_base))
        .bearer_auth(token)
        .send()
        .await
        .expect("replay");
    assert_eq!(resp.status(), 200);
    let mut lines = 0usize;
    let mut last = Vec::new();
    while let Some(chunk) = resp.chunk().await.expect("body") {
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        last = chunk.to_vec();
    }
    let secs = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&last);
    assert!(text.contains("\"end\""), "the replay ended: {text}");
    assert!(!text.contains("\"sealed\""), "opened");
    assert_eq!(lines, expected + 1, "every event and the trailer");
    expected as f64 / secs
}

#[tokio::main]
async fn main() {
    let n: usize = testkit::env::knob("SEALED_EVENTS", 200_000);
    let mut clear = Services::spawn().await;
    let mut sealed = Services::spawn_protected().await;
    let total = n - n % CONVERSATIONS + CONVERSATIONS;
    for stack in [&mut clear, &mut sealed] {
        seed(stack, n).await;
        sqlx::query("VACUUM ANALYZE events")
            .execute(&stack.commands.stack.db.pool)
            .await
            .expect("vacuum");
        // Measured once the relay has published what was seeded, on a quiet machine.
        stack
            .relay_caught_up(total as u64, std::time::Duration::from_secs(1_200))
            .await;
    }
    let (mut replays, mut rebuilds) = (vec![vec![], vec![]], vec![vec![], vec![]]);
    for round in 1..=2 {
        for (i, (label, stack)) in [("clear", &clear), ("sealed", &sealed)]
            .into_iter()
            .enumerate()
        {
            let rate = replay(stack, total).await;
            replays[i].push(rate);
            let started = Instant::now();
            let report = projection::rebuild(
                stack.commands.stack.service.reader().clone(),
                &TableSink(ReadModel),
            )
            .await
            .expect("rebuild");
            let rebuilt = report.replayed as f64 / started.elapsed().as_secs_f64();
            rebuilds[i].push(rebuilt);
            println!(
                "round {round}, {label}: tenant replay {rate:.0} events/s; read model rebuild {} events at {rebuilt:.0} events/s",
                report.replayed
            );
        }
    }
    let best = |v: &Vec<f64>| v.iter().copied().fold(0.0, f64::max);
    println!(
        "sealed / clear, best of 2: replay {:.2}, rebuild {:.2}",
        best(&replays[1]) / best(&replays[0]),
        best(&rebuilds[1]) / best(&rebuilds[0])
    );
}
