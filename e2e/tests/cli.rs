//! `threadline`, the operators' command line, against `dev/stack run`: status of the
//! relay and every projector, replays of a tenant and of an aggregate (a file cut short
//! resumed), search, and the exit codes of a refused token and of something that needs
//! attention. The binary is run as an operator runs it, its output piped (so no
//! progress is drawn).

use std::process::{Command, Output};

use e2e::caller::Caller;
use e2e::dev_stack::{DevStack, SECRET, repo};
use platform::auth::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::stack::wait_until;

struct Cli {
    env: Vec<(String, String)>,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(repo().join("target/debug/threadline"))
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("runs threadline")
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

    // Something to replay and find: a conversation the assistant answers.
    let ann = Caller::new(SECRET.as_bytes(), "ann", &[Role::Member]);
    let (status, started) = ann
        .post(
            format!("{commands}/v1/conversations"),
            json!({"title": "Launch plan"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let conversation = started["id"].as_str().expect("an id").to_owned();
    let (status, sent) = ann
        .post(
            format!("{commands}/v1/conversations/{conversation}/messages"),
            json!({"role": "user", "content": "What does the launch budget cover?"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
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

    // A token the API refuses: exit 3, and what the API said.
    let out = cli.run(&["--token", "not-a-token", "replay"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
