//! `threadline`, the operators' command line, against `dev/stack run`: status of the
//! relay and every projector, replays of a tenant and of an aggregate (a file cut short
//! resumed), search, webhooks, tail, the audit chain verified, an export, retention and an
//! erasure, and the exit codes of a refused token and of something that needs
//! attention. The binary is run as an operator runs it, its output piped (so no
//! progress is drawn).

use std::process::{Command, Output};

use e2e::caller::Caller;
use e2e::dev_stack::{DevStack, SECRET, repo};
use platform::auth::Role;
use serde_json::Value;
use testkit::receiver::Receiver;
use testkit::stack::wait_until;
use tokio::io::AsyncBufReadExt;

struct Cli {
    env: Vec<(String, String)>,
}

impl Cli {
    /// `target/debug/<binary> <args>` with this environment alone.
    fn command(&self, binary: &str, args: &[&str]) -> Command {
        let mut command = Command::new(repo().join("target/debug").join(binary));
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command("threadline", args)
            .output()
            .expect("runs threadline")
    }

    /// Runs `target/debug/<binary>` with the same environment, to success.
    fn run_binary(&self, binary: &str, args: &[&str]) -> Output {
        let out = self.command(binary, args).output().expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs to success: its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "threadline {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.stderr.contains(&b'\r') && !out.stderr.contains(&0x1b),
            "progress drawn off a terminal"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn lines(ndjson: &str) -> Vec<Value> {
    ndjson
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_subcommand_works_against_a_running_stack() {
    let stack = DevStack::start(&[]).await;
    let (commands, queries) = (
        format!("http://{}", stack.commands),
        format!("http://{}", stack.queries),
    );
    let projectors: Vec<String> = stack
        .projectors
        .iter()
        .map(|(name, addr)| format!("{name}=http://{addr}"))
        .collect();
    let mut cli = Cli {
        env: vec![
            ("THREADLINE_COMMAND_API".into(), commands.clone()),
            ("THREADLINE_QUERY_API".into(), queries.clone()),
            ("THREADLINE_PROJECTORS".into(), projectors.join(",")),
            ("JWT_HS256_SECRET".into(), SECRET.into()),
            // What `rebuild` and `redrive` hand the projector's binary.
            ("DATABASE_URL".into(), stack.stack_env("DATABASE_URL")),
            ("KAFKA_BROKERS".into(), stack.stack_env("KAFKA_BROKERS")),
            ("DATA_MASTER_KEY".into(), stack.stack_env("DATA_MASTER_KEY")),
            ("KAFKA_TOPIC_PREFIX".into(), stack.topic_prefix.clone()),
        ],
    };
    // A token from the command line itself, for an operator of tenant acme.
    let token: Value = serde_json::from_str(&cli.ok(&[
        "token",
        "--tenant",
        "acme",
        "--subject",
        "ops",
        "--roles",
        "admin,auditor",
        "--json",
    ]))
    .expect("JSON");
    let token = token["token"].as_str().expect("a token").to_owned();
    cli.env.push(("THREADLINE_TOKEN".into(), token));

    // A webhook receiver, subscribed before anything happens.
    let receiver = Receiver::start().await;
    let admin = Caller::new(SECRET.as_bytes(), "ada", &[Role::Admin]);
    let endpoint = admin.subscribe(&commands, &receiver.url).await;

    // Something to replay and find: a conversation the assistant answers.
    let ann = Caller::new(SECRET.as_bytes(), "ann", &[Role::Member]);
    let conversation = ann
        .start_and_ask(
            &commands,
            "Launch plan",
            "What does the launch budget cover?",
        )
        .await;
    // Answered: nothing more is written for the tenant after this.
    wait_until("the assistant to answer", || async {
        let (_, messages) = ann
            .get(format!(
                "{queries}/v1/conversations/{conversation}/messages"
            ))
            .await;
        messages["items"].as_array().is_some_and(|m| m.len() == 2)
    })
    .await;

    // Search: the question is indexed (the JSON is the API's answer as it is).
    wait_until("the question to be found", || async {
        let out = cli.run(&["search", "launch budget", "--json"]);
        out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout)
                .is_ok_and(|v| v["items"].as_array().is_some_and(|i| !i.is_empty()))
    })
    .await;
    let text = cli.ok(&["search", "launch budget"]);
    assert!(text.contains("launch budget"), "{text}");

    // Status: the relay and every projector, in JSON and as text.
    wait_until("everything to report healthy", || async {
        cli.run(&["status", "--json"]).status.success()
    })
    .await;
    let report: Value = serde_json::from_str(&cli.ok(&["status", "--json"])).expect("JSON");
    assert_eq!(report["healthy"], true, "{report}");
    assert_eq!(report["relay"]["status"]["active"], true, "{report}");
    let reported = report["projectors"].as_array().expect("projectors");
    assert_eq!(reported.len(), stack.projectors.len(), "{report}");
    for p in reported {
        assert!(p["status"]["applied"].as_u64().is_some(), "{p}");
        assert!(p["status"]["generation"].as_i64().is_some(), "{p}");
    }
    let text = cli.ok(&["status"]);
    for (name, _) in &stack.projectors {
        assert!(text.contains(&format!("ok   {name}")), "{text}");
    }
    // A projector that does not answer needs attention: exit 5, and the report says so.
    let ghost = format!("{},ghost=http://127.0.0.1:1", projectors.join(","));
    let out = cli.run(&["status", "--projector", &ghost]);
    assert_eq!(out.status.code(), Some(5));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ATTN ghost"), "{text}");

    // Replay: the tenant's events, every one once and in committed order.
    let pool = sqlx::PgPool::connect(&stack.stack_env("DATABASE_URL"))
        .await
        .expect("the stack's database");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE metadata->>'tenant_id' = 'acme'")
            .fetch_one(&pool)
            .await
            .expect("a count");
    let all = lines(&cli.ok(&["replay"]));
    assert_eq!(all.len() as i64, stored);
    assert!(all.iter().all(|e| e["event_id"].is_string()));
    // A range: after the first event, until the third.
    let position = |e: &Value| e["position"].as_str().expect("a position").to_owned();
    let range = lines(&cli.ok(&[
        "replay",
        "--after",
        &position(&all[0]),
        "--until",
        &position(&all[2]),
    ]));
    assert_eq!(range, all[1..=2].to_vec());
    // One aggregate's.
    let one = lines(&cli.ok(&[
        "replay",
        "--aggregate",
        &format!("conversation/{conversation}"),
    ]));
    assert!(one.len() >= 2, "{one:?}");
    assert!(
        one.iter()
            .all(|e| e["aggregate_id"] == conversation.as_str())
    );
    // Into a file, then cut short mid-line and resumed: the same events, once each.
    let dir = std::env::temp_dir().join(format!("threadline-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let file = dir.join("acme.ndjson");
    let path = file.to_str().expect("a path");
    let summary: Value =
        serde_json::from_str(&cli.ok(&["replay", "--output", path])).expect("a summary");
    assert_eq!(summary["count"], stored, "{summary}");
    let whole = std::fs::read_to_string(&file).expect("the file");
    let cut = whole.len() - whole.lines().last().expect("a line").len() / 2 - 1;
    std::fs::write(&file, &whole[..cut]).expect("cut short");
    let summary: Value = serde_json::from_str(&cli.ok(&["replay", "--output", path, "--resume"]))
        .expect("a summary");
    assert_eq!(summary["count"], 1, "only the event cut short: {summary}");
    assert_eq!(std::fs::read_to_string(&file).expect("the file"), whole);
    let _ = std::fs::remove_dir_all(&dir);

    // Rebuild: what it would do, then done through the projector's binary; re-drive.
    let everything: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("a count");
    let plan: Value =
        serde_json::from_str(&cli.ok(&["rebuild", "read-model", "--dry-run", "--json"]))
            .expect("a plan");
    assert_eq!(plan["events"], everything, "{plan}");
    let next = plan["next_generation"].clone();
    let report: Value =
        serde_json::from_str(&cli.ok(&["rebuild", "read-model", "--json"])).expect("a report");
    assert_eq!(report["generation"], next, "{report}");
    assert_eq!(report["parked"], 0, "{report}");
    assert!(
        report["replayed"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
    let text = cli.ok(&["redrive", "read-model"]);
    assert!(text.contains("0 still parked"), "{text}");
    // The progress the bar is drawn from: the projector's lines, the last one complete.
    let out = cli.run_binary("read-model-projector", &["rebuild", "--progress"]);
    let last = String::from_utf8_lossy(&out.stderr)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("progress").cloned())
        .expect("progress lines");
    assert_eq!(last["done"], last["total"], "{last}");
    assert!(
        last["total"].as_i64().is_some_and(|t| t >= everything),
        "{last}"
    );

    // Webhooks: the endpoint, its ledger, and a message sent again.
    wait_until("the endpoint listed", || async {
        cli.run(&["webhooks", "list"]).status.success()
            && String::from_utf8_lossy(&cli.run(&["webhooks", "list"]).stdout).contains(&endpoint)
    })
    .await;
    let messages = || {
        let page: Value =
            serde_json::from_str(&cli.ok(&["webhooks", "messages", &endpoint, "--json"]))
                .expect("a page");
        page["items"].as_array().cloned().unwrap_or_default()
    };
    wait_until("delivered messages in the ledger", || async {
        messages().iter().any(|m| m["status"] == "delivered")
    })
    .await;
    let delivered = messages()
        .into_iter()
        .find(|m| m["status"] == "delivered")
        .expect("a delivered message");
    let id = delivered["message_id"].as_str().expect("an id").to_owned();
    let text = cli.ok(&["webhooks", "redeliver", &endpoint, "--message", &id]);
    assert!(text.contains("redelivery requested"), "{text}");
    wait_until("the receiver to get it again", || async {
        receiver.delivered_by("webhook-id").get(&id).copied() >= Some(2)
    })
    .await;

    // Tail: events as they are committed, after the last one replayed above (from now on,
    // its default, would race with the command below).
    let after = all
        .last()
        .and_then(|e| e["position"].as_str())
        .expect("a position")
        .to_owned();
    let mut tail =
        tokio::process::Command::from(cli.command("threadline", &["tail", "--after", &after]))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("threadline tail");
    let mut followed = tokio::io::BufReader::new(tail.stdout.take().expect("piped")).lines();
    let later = ann
        .start_and_ask(&commands, "Later plan", "And the later budget?")
        .await;
    let seen = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Ok(Some(line)) = followed.next_line().await {
            let event: Value = serde_json::from_str(&line).expect("a JSON line");
            if event["aggregate_id"] == later.as_str() {
                return event;
            }
        }
        panic!("tail ended");
    })
    .await
    .expect("the new conversation followed within a minute");
    assert_eq!(seen["event_type"], "ConversationStarted", "{seen}");
    let _ = tail.kill().await;

    // Data protection: the audit chain verified, a person's archive exported, a
    // retention policy set and read, the person erased, and the chain still whole.
    let verified: Value = serde_json::from_str(&cli.ok(&["verify", "--json"])).expect("a report");
    assert_eq!(verified["verified"], true, "{verified}");
    assert!(
        verified["checked"].as_u64().is_some_and(|n| n > 0),
        "{verified}"
    );
    let archive = lines(&cli.ok(&["export", "ann"]));
    assert!(archive.first().is_some_and(|l| l.get("export").is_some()));
    assert!(archive.last().is_some_and(|l| l.get("end").is_some()));
    assert!(
        archive
            .iter()
            .any(|l| l["aggregate_id"] == conversation.as_str()),
        "her conversation is in her archive"
    );
    let policy = cli.ok(&["retention", "--days", "30"]);
    assert!(policy.contains("more than 30 days"), "{policy}");
    let policy: Value = serde_json::from_str(&cli.ok(&["retention", "--json"])).expect("JSON");
    assert_eq!(policy["conversations_ended_days"], 30, "{policy}");
    let erased: Value = serde_json::from_str(&cli.ok(&[
        "erase",
        "person",
        "ann",
        "--reason",
        "her request of today",
        "--json",
    ]))
    .expect("an answer");
    assert_eq!(erased["subject"], "user:ann", "{erased}");
    assert!(
        erased["conversation_ids"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|id| id == conversation.as_str())),
        "{erased}"
    );
    let text = cli.ok(&["verify"]);
    assert!(text.starts_with("the audit chain holds"), "{text}");
    // The whole tenant only when the operator says yes.
    let out = cli.run(&["erase", "tenant", "--reason", "offboarding"]);
    assert_eq!(out.status.code(), Some(2));

    // A token the API refuses: exit 3, and what the API said.
    let out = cli.run(&["--token", "not-a-token", "replay"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
