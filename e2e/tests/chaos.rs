//! Chaos under load: `dev/stack run` on a PostgreSQL cluster and a broker of its own,
//! supervised (`THREADLINE_SUPERVISE=1`: what dies is started again, as an orchestrator
//! would), while writers send commands. One after another: kill -9 of command-api, of
//! every projector, of the PostgreSQL postmaster (a crash and its recovery), of the
//! broker. Then every acknowledged command is in the store, on Kafka in per-aggregate
//! order (re-deliveries allowed: at least once), and in the read model.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::dev_stack::{DevStack, SECRET};
use platform::auth::Role;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const WRITERS: usize = 4;
const MESSAGES_PER_CONVERSATION: usize = 8;

/// One acknowledged command: the conversation, the version the answer gave, and the
/// message's text (none for the start).
#[derive(Debug, Clone)]
struct Acked {
    conversation: Uuid,
    version: i64,
    content: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commands_survive_kills_and_restarts_of_every_process() {
    let stack = DevStack::start_alone(&[
        ("THREADLINE_SUPERVISE", "1"),
        ("RATE_LIMIT_SUBJECT", "1000000/1000000"),
        ("RATE_LIMIT_TENANT", "1000000/1000000"),
    ])
    .await;
    let token =
        testkit::tokens::hs256_token(SECRET.as_bytes(), "chaos", "writer", &[Role::Member], 3600);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(write(
                format!("http://{}", stack.commands),
                token.clone(),
                w,
                Arc::clone(&stop),
            ))
        })
        .collect();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut faults: Vec<(&str, String)> =
        vec![("command-api", format!("http://{}/readyz", stack.commands))];
    faults.extend(
        stack
            .projectors
            .iter()
            .map(|(bin, addr)| (bin.as_str(), format!("http://{addr}/healthz"))),
    );
    faults.push(("postgres", format!("http://{}/readyz", stack.commands)));
    faults.push(("broker", format!("http://{}/readyz", stack.commands)));
    for (what, ready) in &faults {
        let before = stack.pid(what);
        assert!(
            e2e::dev_stack::signal_process(before, "-KILL"),
            "kill -9 {what} ({before})"
        );
        eprintln!("killed {what} ({before})");
        // Back when the supervisor has started it again and it answers.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let up = match stack.try_pid(what) {
                Some(pid) if pid != before => http
                    .get(ready)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                _ => false,
            };
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "{what} did not come back");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Some load on the restarted process before the next fault.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer"));
    }
    let conversations: BTreeMap<Uuid, Vec<&Acked>> =
        acked.iter().fold(BTreeMap::new(), |mut by, a| {
            by.entry(a.conversation).or_default().push(a);
            by
        });
    eprintln!(
        "{} acknowledged commands in {} conversations",
        acked.len(),
        conversations.len()
    );
    assert!(
        acked.len() >= 50,
        "too little load to mean anything: {} commands",
        acked.len()
    );

    // 1. The store has every acknowledged version.
    let pool = sqlx::PgPool::connect(&stack.stack_env("DATABASE_URL"))
        .await
        .expect("connect to the stack's database");
    let stored: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT aggregate_id, max(sequence) FROM events \
         WHERE aggregate_type = 'conversation' GROUP BY aggregate_id",
    )
    .fetch_all(&pool)
    .await
    .expect("read the store")
    .into_iter()
    .collect();
    for a in &acked {
        let max = stored
            .get(&a.conversation.to_string())
            .copied()
            .unwrap_or(0);
        assert!(
            max >= a.version,
            "acknowledged {a:?}, the store has up to version {max}"
        );
    }

    // 2. Kafka has every stored event of these conversations, each aggregate's in order.
    let kafka = stack.kafka();
    let consumer: StreamConsumer = kafka
        .consumer(
            "chaos-checker",
            &format!("chaos-checker-{}", Uuid::new_v4()),
        )
        .expect("consumer");
    consumer
        .subscribe(&[&schemas::AggregateKind::Conversation.topic(&kafka.topic_prefix)])
        .expect("subscribe");
    let wanted: HashMap<String, i64> = conversations
        .keys()
        .map(|c| (c.to_string(), stored[&c.to_string()]))
        .collect();
    let mut seen: HashMap<String, i64> = HashMap::new();
    let (mut records, mut again) = (0usize, 0usize);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while wanted
        .iter()
        .any(|(id, max)| seen.get(id).copied().unwrap_or(0) < *max)
    {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                let missing: Vec<_> = wanted
                    .iter()
                    .filter(|(id, max)| seen.get(*id).copied().unwrap_or(0) < **max)
                    .collect();
                panic!("not on Kafka within 180 s (aggregate, stored version): {missing:?}")
            })
            .expect("consume");
        let key = String::from_utf8_lossy(msg.key().expect("record key")).into_owned();
        let sequence: i64 = kafka::headers::header(&msg, "sequence")
            .and_then(|s| s.parse().ok())
            .expect("sequence header");
        records += 1;
        let last = seen.entry(key.clone()).or_insert(0);
        assert!(
            sequence <= *last + 1,
            "{key}: sequence {sequence} arrived after {last}: a gap, or order broken"
        );
        if sequence <= *last {
            again += 1;
        }
        *last = (*last).max(sequence);
    }
    eprintln!("Kafka: {records} records, {again} of them re-delivered");

    // 3. The read model has every acknowledged message.
    let reader = reqwest::Client::new();
    for (conversation, commands) in &conversations {
        let version = stored[&conversation.to_string()];
        let url = format!(
            "http://{}/v1/conversations/{conversation}/messages?limit=100&position=conversation:{conversation}:{version}&wait_ms=3000",
            stack.queries
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        let page = loop {
            let resp = reader
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("read");
            if resp.status() == StatusCode::OK {
                break resp.json::<Value>().await.expect("json");
            }
            assert!(
                Instant::now() < deadline,
                "{conversation}: the read model did not reach version {version}: {}",
                resp.status()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let items = page["items"].as_array().expect("items");
        for a in commands.iter().filter(|a| a.content.is_some()) {
            assert!(
                items.iter().any(|m| m["sequence"] == json!(a.version)
                    && m["content"].as_str() == a.content.as_deref()),
                "{conversation}: acknowledged message {a:?} is not in the read model"
            );
        }
    }
}

/// Writer `w`: conversations of [`MESSAGES_PER_CONVERSATION`] messages until `stop`.
/// Every command has its own Idempotency-Key and is sent again, with the same key, until
/// it is answered: what a careful client does while processes die.
async fn write(base: String, token: String, w: usize, stop: Arc<AtomicBool>) -> Vec<Acked> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut acked = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Some(started) = send(
            &http,
            &token,
            format!("{base}/v1/conversations"),
            format!("chaos-{w}-{n}"),
            json!({"title": format!("chaos {w}.{n}"), "assistant": false}),
        )
        .await
        else {
            break;
        };
        let conversation: Uuid = started["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("conversation id");
        acked.push(Acked {
            conversation,
            version: started["version"].as_i64().expect("version"),
            content: None,
        });
        for k in 0..MESSAGES_PER_CONVERSATION {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let content = format!("writer {w}, conversation {n}, message {k}");
            let Some(sent) = send(
                &http,
                &token,
                format!("{base}/v1/conversations/{conversation}/messages"),
                format!("chaos-{w}-{n}-{k}"),
                json!({"role": "user", "content": content}),
            )
            .await
            else {
                break;
            };
            acked.push(Acked {
                conversation,
                version: sent["version"].as_i64().expect("version"),
                content: Some(content),
            });
        }
    }
    acked
}

/// POSTs until a 2xx answer (its body), or gives up 60 s after the first try (`None`).
/// A 4xx other than 429 is a bug in the test or the service.
async fn send(
    http: &reqwest::Client,
    token: &str,
    url: String,
    key: String,
    body: Value,
) -> Option<Value> {
    let gave_up = Instant::now() + Duration::from_secs(60);
    while Instant::now() < gave_up {
        match http
            .post(&url)
            .bearer_auth(token)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return r.json().await.ok(),
            Ok(r)
                if r.status().is_client_error() && r.status() != StatusCode::TOO_MANY_REQUESTS =>
            {
                panic!(
                    "{url}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    None
}
