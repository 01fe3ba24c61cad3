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
    // The relay refuses (451) the same message again and again: an outage, retried
    // without counting attempts, so nothing is lost and nothing is parked.
    let attempts = testkit::stack::MAX_ATTEMPTS as usize + 1;
    testkit::wait_until(
        "the relay to refuse more times than attempts are counted",
        || async { smtp.refused() >= attempts },
    )
    .await;
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
        None,
    )
    .expect("an email channel")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_goes_through_a_real_relay_with_starttls_auth_and_a_private_ca() {
    let relay = Relay::start().await;
    let channel = relay.channel(Some(&relay.ca()));
    let kit = Kit::start(Arc::new(EffectSink::new(Notifications::new(channel)))).await;
    let c = kit.start_conversation("acme", "Over TLS").await;
    kit.end("acme", c).await;
    kit.settle().await;
    let mails = relay.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["to"], json!(["writer@example.com"]));
    assert_eq!(mails[0]["tls"], true, "sent after STARTTLS");
    assert_eq!(mails[0]["user"], "threadline", "sent after AUTH");
    assert!(
        mails[0]["data"]
            .as_str()
            .is_some_and(|d| d.contains("The conversation has ended")),
        "{mails:?}"
    );
    assert_eq!(
        kit.rows("SELECT count(*) AS n FROM {schema}.parked").await,
        vec![json!({"n": 0})]
    );
    kit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_certificate_the_channel_does_not_trust_parks_the_mail_instead_of_waiting_forever()
{
    let relay = Relay::start().await;
    // The public roots only: the relay's private CA is not among them.
    let channel = relay.channel(None);
    let kit = Kit::start(Arc::new(EffectSink::new(Notifications::new(channel)))).await;
    let c = kit.start_conversation("acme", "Untrusted").await;
    kit.end("acme", c).await;
    // Settled means applied or parked: an outage would be retried and never settle.
    kit.settle().await;
    let parked = kit
        .rows("SELECT error, attempts FROM {schema}.parked")
        .await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let error = parked[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("SMTP TLS") && error.contains("certificate"),
        "{error}"
    );
    assert!(relay.mails().is_empty());
    kit.stop().await;
}

#[test]
fn a_ca_file_needs_a_tls_url_and_certificates() {
    let refused = |url: &str, pem: &str| {
        Channel::email(
            url,
            "noreply@threadline.test",
            "{user}".into(),
            Duration::from_secs(1),
            Some(pem.as_bytes()),
        )
        .err()
        .unwrap_or_default()
    };
    let garbled = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
    assert!(refused("smtp://relay.example.com:25", garbled).contains("does not use TLS"));
    assert!(refused("smtps://relay.example.com", garbled).contains("the CA file"));
    assert!(refused("smtps://relay.example.com", "").contains("no PEM certificate"));
}

/// A company's own mail relay: aiosmtpd (PyPI) taking mail only after STARTTLS and AUTH,
/// with a certificate its own CA issued, run by `dev/smtp-relay.py` with the interpreter
/// `dev/stack test` provides.
struct Relay {
    _child: tokio::process::Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Relay {
    async fn start() -> Relay {
        use tokio::io::AsyncBufReadExt;
        let python = std::env::var("THREADLINE_TEST_PYTHON").expect(
            "THREADLINE_TEST_PYTHON: run the tests through dev/stack test (it installs aiosmtpd)",
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../dev/smtp-relay.py");
        let dir = std::env::temp_dir().join(format!("smtp-relay-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a directory for the relay");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .arg(&dir)
            .arg(port.to_string())
            .env_clear()
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the relay");
        let stdout = child.stdout.take().expect("the relay's stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the relay starts within a minute")
            .expect("the relay's stdout");
        assert_eq!(ready.as_deref(), Some("ready"));
        Relay {
            _child: child,
            dir,
            port,
        }
    }

    /// STARTTLS required, with the relay's user and password.
    fn url(&self) -> String {
        format!(
            "smtp://threadline:relay-secret@127.0.0.1:{}?tls=required",
            self.port
        )
    }

    /// Email to `{user}@example.com` through the relay, trusting `ca` besides the public
    /// roots.
    fn channel(&self, ca: Option<&[u8]>) -> Channel {
        Channel::email(
            &self.url(),
            "Threadline <noreply@threadline.test>",
            "{user}@example.com".into(),
            Duration::from_secs(5),
            ca,
        )
        .expect("an email channel")
    }

    fn ca(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.pem")).expect("the relay's CA")
    }

    fn mails(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("mails.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a recorded mail"))
            .collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
