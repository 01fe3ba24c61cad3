//! The command line on its own, without a stack: what it prints, its exit codes, and
//! that it draws no progress off a terminal. `e2e/tests/cli.rs` runs every subcommand
//! against a running stack.

use std::process::{Command, Output};

use platform::auth::Role;

fn threadline(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_threadline"))
        .args(args)
        .env_remove("THREADLINE_TOKEN")
        .env_remove("THREADLINE_PROJECTORS")
        .envs(env.iter().copied())
        .output()
        .expect("runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_development_token_is_one_the_apis_accept() {
    let secret = std::str::from_utf8(testkit::tokens::SECRET).expect("text");
    let out = threadline(
        &[
            "token",
            "--tenant",
            "acme",
            "--subject",
            "ops",
            "--roles",
            "admin,auditor",
            "--json",
        ],
        &[("JWT_HS256_SECRET", secret)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(printed["roles"], serde_json::json!(["admin", "auditor"]));
    let token = printed["token"].as_str().expect("a token");
    let who = testkit::tokens::authenticator()
        .authenticate(Some(&format!("Bearer {token}")))
        .await
        .expect("the APIs' authenticator accepts it");
    assert_eq!(
        (who.tenant_id.as_str(), who.subject.as_str(), who.roles),
        ("acme", "ops", vec![Role::Admin, Role::Auditor])
    );
    // Without --json: the token alone, for `T=$(threadline token)`.
    let plain = threadline(&["token"], &[("JWT_HS256_SECRET", secret)]);
    assert_eq!(text(&plain.stdout).trim().split('.').count(), 3);
}

#[test]
fn a_wrong_command_line_exits_2_and_help_lists_the_exit_codes() {
    let wrong = threadline(
        &["token", "--roles", "emperor"],
        &[("JWT_HS256_SECRET", "s")],
    );
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong.stderr));
    assert!(text(&wrong.stderr).contains("emperor"));
    let help = threadline(&["--help"], &[]);
    assert!(help.status.success());
    for line in [
        "3  the API refused",
        "4  unavailable",
        "5  status",
        "6  verify",
    ] {
        assert!(text(&help.stdout).contains(line), "{}", text(&help.stdout));
    }
}

#[test]
fn an_api_that_cannot_be_reached_exits_4_and_says_which() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let api = format!("http://127.0.0.1:{port}");
    for (args, code) in [
        // `status` reports what it cannot reach, as something that needs attention.
        (vec!["--command-api", &api, "status"], 5),
        (vec!["--query-api", &api, "search", "launch plan"], 4),
        (
            vec![
                "--query-api",
                &api,
                "replay",
                "--aggregate",
                "conversation/x",
            ],
            4,
        ),
        (vec!["--query-api", &api, "export", "ann"], 4),
        (
            vec![
                "--command-api",
                &api,
                "erase",
                "person",
                "ann",
                "--reason",
                "r",
            ],
            4,
        ),
    ] {
        let out = threadline(&args, &[("THREADLINE_TOKEN", "t")]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stdout}{stderr}");
        assert!(
            stdout.contains(&api) || stderr.contains(&api),
            "{stdout}{stderr}"
        );
        // Off a terminal nothing is drawn: no carriage returns, no escape sequences.
        assert!(
            !stderr.contains('\r') && !stderr.contains('\u{1b}'),
            "{stderr:?}"
        );
    }
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = threadline(&["completions", shell], &[]);
        assert!(out.status.success());
        let script = text(&out.stdout);
        assert!(
            script.contains("threadline") && script.contains("replay"),
            "{shell}"
        );
    }
}
