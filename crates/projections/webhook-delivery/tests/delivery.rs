//! Webhook delivery end to end: commands become events in the store, the relay puts them
//! on the broker, the fan-out projection writes messages, the dispatcher sends them to a
//! real HTTP receiver. Nothing is mocked but the third party.

use std::sync::Arc;
use std::time::Duration;

use commands::NewEndpoint;
use projection::TableSink;
use testkit::commands::admin_meta;
use testkit::projection::Kit;
use testkit::receiver::Receiver;
use testkit::stack::wait_until;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;
use webhook_delivery::{DeliverySettings, Dispatcher, Fanout, Schedule};
use webhooks::ssrf::Guard;

fn settings(schedule: &str) -> DeliverySettings {
    DeliverySettings {
        webhooks: testkit::webhooks::settings(),
        schedule: Schedule::parse(schedule).expect("a schedule"),
        timeout: Duration::from_secs(2),
        concurrency: 16,
        per_endpoint: 4,
        lease: Duration::from_secs(5),
        poll: Duration::from_millis(50),
        disable_after: chrono::Duration::hours(1),
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), String>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Gone the way kill -9 would leave it: attempts in flight are cut short.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn dispatcher(kit: &Kit<TableSink<Fanout>>, settings: DeliverySettings) -> Running {
    let pool = kit.stack.db.pool.clone();
    let commands =
        commands::CommandService::new(pool.clone(), Arc::new(commands::TemplateGenerator));
    let d = Dispatcher::new(pool, commands, settings).expect("the HTTP client");
    let (stop, stopped) = watch::channel(false);
    Running {
        stop,
        task: tokio::spawn(d.run(stopped)),
    }
}

/// A fresh stack with the fan-out projector running and the ledger migrated (before any
/// event is written, so the projector never writes to a missing table).
async fn world() -> Kit<TableSink<Fanout>> {
    let kit = Kit::start(Arc::new(TableSink(Fanout::new(Duration::ZERO)))).await;
    webhook_delivery::migrate(&kit.stack.db.pool)
        .await
        .expect("ledger migrations");
    kit
}

async fn endpoint(kit: &Kit<TableSink<Fanout>>, url: &str, types: &[&str]) -> (Uuid, String) {
    let accepted = kit
        .stack
        .service
        .create_webhook_endpoint(
            NewEndpoint {
                url: url.to_owned(),
                event_types: types.iter().map(|t| (*t).to_owned()).collect(),
                description: Some("test receiver".into()),
            },
            &admin_meta("acme"),
        )
        .await
        .expect("endpoint created");
    let secret = kit
        .stack
        .service
        .revealed_secret(&accepted)
        .expect("the secret opens")
        .expect("a secret");
    (accepted.aggregate_id, secret.expose())
}

async fn scalar(kit: &Kit<TableSink<Fanout>>, sql: &str) -> i64 {
    kit.stack.scalar(sql).await
}

/// Checks every delivered request's signature with the `standardwebhooks` package from
/// PyPI (an implementation independent of ours), run by the interpreter `dev/stack test`
/// provides.
fn verify_with_python(receiver: &Receiver, secrets: &[String]) {
    let python = std::env::var("THREADLINE_TEST_PYTHON")
        .expect("THREADLINE_TEST_PYTHON: run the tests through dev/stack test");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../dev/verify-webhooks.py"
    );
    let requests: Vec<serde_json::Value> = receiver
        .received()
        .iter()
        .map(|r| serde_json::json!({"headers": r.headers, "body": r.raw}))
        .collect();
    let input = serde_json::json!({"secrets": secrets, "requests": requests}).to_string();
    let path = std::env::temp_dir().join(format!("webhooks-{}.json", Uuid::new_v4()));
    std::fs::write(&path, input).expect("write the requests");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&path)
        .output()
        .expect("run the verifier");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "standardwebhooks refused a signature:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let verified: usize = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count");
    assert_eq!(verified, receiver.received().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_fails_for_a_while_gets_every_subscribed_event_once_across_kill_and_rebuild()
 {
    let mut kit = world().await;
    let receiver = Receiver::start().await;
    receiver.set_down(Some(503));
    let mut d = dispatcher(
        &kit,
        settings("0s,200ms,400ms,800ms,1s,1s,1s,1s,1s,1s,1s,1s"),
    );
    let (endpoint_id, secret) = endpoint(
        &kit,
        &receiver.url,
        &["conversation.started", "message.sent"],
    )
    .await;

    // Events of another tenant, and types not subscribed to, are not sent.
    let other = kit.start_conversation("globex", "Not ours").await;
    kit.send("globex", other, "secret plans").await;
    let c = kit.start_conversation("acme", "Launch").await;
    for i in 0..5 {
        kit.send("acme", c, &format!("m{i}")).await;
    }
    wait_until("failed attempts", || async {
        receiver
            .received()
            .iter()
            .filter(|r| r.status == 503)
            .count()
            >= 6
    })
    .await;
    receiver.heal();
    wait_until("the first messages delivered", || async {
        receiver.delivered_by("webhook-id").len() >= 3
    })
    .await;

    // kill -9 of the projector and the dispatcher, more events meanwhile, then back.
    d.kill().await;
    if let Some(p) = kit.projector.take() {
        p.kill().await;
    }
    for i in 5..8 {
        kit.send("acme", c, &format!("m{i}")).await;
    }
    // Not subscribed: sent to nobody.
    kit.end("acme", c).await;
    kit.projector = Some(kit.stack.projector(kit.sink.clone()).await);
    d = dispatcher(&kit, settings("0s,200ms,400ms,800ms,1s"));
    kit.settle().await;
    wait_until("every message delivered", || async {
        receiver.delivered_by("webhook-id").len() == 9
    })
    .await;

    // A rebuild replays history: it sends nothing and creates no message.
    let report = projection::rebuild(&kit.stack.db.pool, kit.sink.as_ref())
        .await
        .expect("rebuild");
    assert!(report.replayed > 0, "{report:?}");
    // Attempts the kill cut off before they were recorded are sent again once their
    // lease runs out (the receiver de-duplicates them): the ledger catches up.
    wait_until("every message recorded delivered", || async {
        scalar(
            &kit,
            "SELECT count(*) FROM webhook_messages WHERE status = 'delivered'",
        )
        .await
            == 9
    })
    .await;
    d.stop().await;

    let delivered = receiver.delivered_by("webhook-id");
    assert_eq!(delivered.len(), 9, "1 started + 8 messages: {delivered:?}");
    let types: Vec<String> = receiver
        .received()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        types
            .iter()
            .all(|t| t == "conversation.started" || t == "message.sent"),
        "{types:?}"
    );
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| !r.raw.contains("secret plans")),
        "another tenant's event was sent"
    );
    assert_eq!(
        scalar(&kit, "SELECT count(*) FROM webhook_messages").await,
        9
    );
    assert_eq!(
        scalar(
            &kit,
            "SELECT count(*) FROM webhook_messages WHERE status = 'delivered'"
        )
        .await,
        9
    );
    // Every attempt is in the ledger, the failed ones with their status code.
    let attempts = scalar(&kit, "SELECT count(*) FROM webhook_attempts").await;
    let failed = scalar(
        &kit,
        "SELECT count(*) FROM webhook_attempts WHERE status_code = 503 AND NOT succeeded",
    )
    .await;
    assert!(
        failed >= 6 && attempts >= failed + 9,
        "{attempts} attempts, {failed} failed"
    );
    let m = receiver
        .received()
        .into_iter()
        .find(|r| r.status == 200)
        .expect("a delivery");
    assert_eq!(m.body["data"]["conversation_id"], c.to_string());
    assert!(
        m.header("webhook-id")
            .is_some_and(|id| id.starts_with("msg_"))
    );
    let _ = endpoint_id;
    verify_with_python(&receiver, &[secret]);
    kit.stop().await;
}

/// Claims run ahead of the sends (several rounds of an endpoint at once), yet no
/// endpoint ever has more than `per_endpoint` attempts in flight, and a slow endpoint's
/// backlog does not hold up a fast one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_endpoint_gets_its_share_at_once_and_a_fast_one_is_not_held_up() {
    let kit = world().await;
    let (slow, fast) = (Receiver::start().await, Receiver::start().await);
    slow.set_delay(Some(Duration::from_millis(300)));
    endpoint(&kit, &slow.url, &["conversation.started"]).await;
    endpoint(&kit, &fast.url, &["conversation.started"]).await;
    for n in 0..40 {
        kit.start_conversation("acme", &format!("Busy {n}")).await;
    }
    wait_until("every message fanned out", || async {
        scalar(&kit, "SELECT count(*) FROM webhook_messages").await == 80
    })
    .await;
    let d = dispatcher(&kit, settings("0s"));
    wait_until("the fast endpoint's 40 delivered", || async {
        fast.delivered_by("webhook-id").len() == 40
    })
    .await;
    assert!(
        slow.received().len() < 40,
        "the slow endpoint's (4 at a time, 300 ms each) were not all done first"
    );
    wait_until("the slow endpoint's 40 delivered", || async {
        slow.delivered_by("webhook-id").len() == 40
    })
    .await;
    let per_endpoint = settings("0s").per_endpoint;
    assert_eq!(
        slow.most_at_once(),
        per_endpoint,
        "the slow endpoint's share"
    );
    assert!(fast.most_at_once() <= per_endpoint);
    let (slow, fast) = (
        slow.delivered_by("webhook-id"),
        fast.delivered_by("webhook-id"),
    );
    assert!(
        slow.values().chain(fast.values()).all(|n| *n == 1),
        "each once"
    );
    d.stop().await;
    kit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_in_the_middle_of_the_schedule_resumes_it_at_the_right_step() {
    let kit = world().await;
    let receiver = Receiver::start().await;
    receiver.set_down(Some(503));
    // Two quick attempts, then a long wait: a restarted dispatcher must keep the wait.
    let schedule = "0s,200ms,6s,200ms";
    let d = dispatcher(&kit, settings(schedule));
    endpoint(&kit, &receiver.url, &["conversation.started"]).await;
    kit.start_conversation("acme", "Retry me").await;
    wait_until("two attempts", || async { receiver.received().len() >= 2 }).await;
    // Let the second attempt be recorded, then restart.
    wait_until("two attempts recorded", || async {
        scalar(&kit, "SELECT count(*) FROM webhook_attempts").await == 2
    })
    .await;
    d.stop().await;
    let second = receiver.received()[1].at;
    let d = dispatcher(&kit, settings(schedule));
    wait_until("the third attempt", || async {
        receiver.received().len() >= 3
    })
    .await;
    let third = receiver.received()[2].at;
    let waited = third.duration_since(second);
    // The schedule's third step (6 s, jittered by at most a tenth), not a fresh start.
    assert!(
        waited >= Duration::from_millis(5_300),
        "waited only {waited:?}"
    );
    // The ledger records an attempt once its answer is in (in batches): it may lag the
    // receiver by a moment, and the fourth attempt follows the third by 200 ms.
    wait_until("the third attempt recorded", || async {
        scalar(&kit, "SELECT attempts::bigint FROM webhook_messages").await >= 3
    })
    .await;
    // After the fourth (last) attempt the message is dead and its owner is told.
    wait_until("the message dead", || async {
        scalar(
            &kit,
            "SELECT count(*) FROM webhook_messages WHERE status = 'dead'",
        )
        .await
            == 1
    })
    .await;
    wait_until("the failure recorded as an event", || async {
        scalar(
            &kit,
            "SELECT count(*) FROM events WHERE event_type = 'WebhookMessageFailed'",
        )
        .await
            == 1
    })
    .await;
    // Four attempts in all, across the restart: none lost, none repeated.
    assert_eq!(
        scalar(&kit, "SELECT attempts::bigint FROM webhook_messages").await,
        4
    );
    assert_eq!(receiver.received().len(), 4);
    d.stop().await;
    kit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_are_not_followed_and_a_name_resolving_to_loopback_is_refused_at_delivery() {
    let kit = world().await;
    let receiver = Receiver::start().await;
    receiver.redirect_to("http://169.254.169.254/latest/meta-data/");
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .expect("a port");
    // Registered while loopback was allowed; delivered by a dispatcher that refuses it:
    // what a DNS answer changed to an internal address looks like at delivery.
    let rebound = format!("http://localhost:{port}/hook");
    endpoint(&kit, &receiver.redirect_url(), &["conversation.started"]).await;
    endpoint(&kit, &rebound, &["conversation.started"]).await;
    let mut strict = settings("0s");
    strict.webhooks.guard = Guard {
        allow_loopback: false,
        allow_http: true,
    };
    // The redirect endpoint is on 127.0.0.1 too: let the first dispatcher reach it.
    let d = dispatcher(&kit, settings("0s"));
    kit.start_conversation("acme", "Where to?").await;
    wait_until("both attempts", || async {
        scalar(
            &kit,
            "SELECT count(*) FROM webhook_messages WHERE status = 'dead'",
        )
        .await
            >= 1
            && receiver.received().len() == 1
    })
    .await;
    d.stop().await;
    let redirect_error: String =
        sqlx::query_scalar("SELECT error FROM webhook_attempts WHERE status_code = 307")
            .fetch_one(&kit.stack.db.pool)
            .await
            .expect("the redirect attempt");
    assert!(redirect_error.contains("not followed"), "{redirect_error}");

    // Now the strict dispatcher: the loopback name is refused before any connection.
    sqlx::query("UPDATE webhook_messages SET status = 'pending', attempts = 0, next_attempt_at = now() WHERE status = 'dead'")
        .execute(&kit.stack.db.pool)
        .await
        .expect("make them due");
    let before = receiver.received().len();
    let d = dispatcher(&kit, strict);
    wait_until("the refused attempts", || async {
        scalar(
            &kit,
            "SELECT count(*) FROM webhook_attempts WHERE error LIKE '%loopback%'",
        )
        .await
            >= 1
    })
    .await;
    d.stop().await;
    assert_eq!(
        receiver.received().len(),
        before,
        "the strict dispatcher reached loopback"
    );
    kit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_failing_too_long_is_disabled_and_its_dead_messages_can_be_redelivered() {
    let kit = world().await;
    let receiver = Receiver::start().await;
    receiver.set_down(Some(503));
    // Two attempts per message (100 ms apart); an endpoint failing for 1.5 s is disabled:
    // the first message dies well before that, the second message's attempt after it.
    let mut s = settings("0s,100ms");
    s.disable_after = chrono::Duration::milliseconds(1_500);
    let d = dispatcher(&kit, s);
    let (endpoint_id, _) = endpoint(&kit, &receiver.url, &["conversation.started"]).await;
    kit.start_conversation("acme", "First").await;
    wait_until("the first message dead", || async {
        scalar(
            &kit,
            "SELECT count(*) FROM webhook_messages WHERE status = 'dead'",
        )
        .await
            == 1
    })
    .await;
    // Still failing once the streak is older than disable_after (what the dispatcher
    // checks, read from its own table): the second message's attempt disables the
    // endpoint, and its retry waits (paused) instead of being attempted.
    wait_until("a failing streak older than 1.5 s", || async {
        scalar(
            &kit,
            "SELECT count(*) FROM webhook_endpoint_health
             WHERE clock_timestamp() - failing_since > interval '1600 milliseconds'",
        )
        .await
            == 1
    })
    .await;
    kit.start_conversation("acme", "Second").await;
    wait_until("the automatic disable", || async {
        scalar(&kit, "SELECT count(*) FROM events WHERE event_type = 'WebhookEndpointDisabled' AND payload -> 'WebhookEndpointDisabled' ->> 'automatic' = 'true'").await == 1
    })
    .await;
    wait_until("the second message paused", || async {
        scalar(
            &kit,
            "SELECT count(*) FROM webhook_messages WHERE status = 'paused'",
        )
        .await
            == 1
    })
    .await;
    let attempts = receiver.received().len();
    assert_eq!(attempts, 3, "two for the first message, one for the second");

    // The receiver is fixed: enable the endpoint (the paused message goes) and redeliver
    // the dead one.
    receiver.heal();
    let admin = admin_meta("acme");
    kit.stack
        .service
        .webhook_endpoint(endpoint_id, domain::WebhookCommand::Enable, None, &admin)
        .await
        .expect("enabled");
    kit.stack
        .service
        .webhook_endpoint(
            endpoint_id,
            domain::WebhookCommand::Redeliver {
                message_id: None,
                since: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
                until: None,
            },
            None,
            &admin,
        )
        .await
        .expect("redelivery requested");
    wait_until("both delivered", || async {
        receiver.delivered_by("webhook-id").len() == 2
    })
    .await;
    assert!(receiver.received().len() > attempts);
    // Recorded a moment after the receiver answered.
    wait_until("both recorded delivered", || async {
        scalar(
            &kit,
            "SELECT count(*) FROM webhook_messages WHERE status = 'delivered'",
        )
        .await
            == 2
    })
    .await;
    d.stop().await;
    kit.stop().await;
}
