//! The console binary on its own: its pages with their security headers, and what it
//! answers when the APIs behind it are down. `e2e/tests/console.rs` drives it in a
//! browser against a running stack.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::net::free_addr;

struct Console(Child, String);

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The console in front of APIs that nothing serves.
async fn console() -> Console {
    let (addr, nowhere) = (free_addr(), format!("http://{}", free_addr()));
    let child = Command::new(env!("CARGO_BIN_EXE_console"))
        .env("CONSOLE_ADDR", &addr)
        .env("CONSOLE_COMMAND_API", &nowhere)
        .env("CONSOLE_QUERY_API", &nowhere)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the console starts");
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/console/")).await.is_err() {
        assert!(Instant::now() < deadline, "the console did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Console(child, base)
}

#[tokio::test]
async fn pages_come_with_a_policy_of_this_origin_only_and_no_caching() {
    let console = console().await;
    for (path, kind) in [
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let answer = reqwest::get(format!("{}{path}", console.1))
            .await
            .expect("an answer");
        assert_eq!(answer.status(), reqwest::StatusCode::OK, "{path}");
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let policy = header("content-security-policy");
        assert!(
            policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("cache-control"), "no-store");
    }
    // The page runs no inline script (the policy would block it).
    let html = reqwest::get(format!("{}/console/", console.1))
        .await
        .expect("the page")
        .text()
        .await
        .expect("text");
    assert!(
        !html.contains("<script>") && !html.contains("onclick"),
        "{html}"
    );
}

#[tokio::test]
async fn apis_that_are_down_are_a_502_problem_not_a_hang() {
    let console = console().await;
    for path in [
        "/api/queries/v1/conversations",
        "/api/commands/v1/conversations",
        "/api/status",
    ] {
        let answer = reqwest::get(format!("{}{path}", console.1))
            .await
            .expect("an answer");
        assert_eq!(answer.status(), reqwest::StatusCode::BAD_GATEWAY, "{path}");
        let problem: serde_json::Value = answer.json().await.expect("a problem document");
        assert_eq!(problem["status"], 502, "{path}");
    }
}

#[tokio::test]
async fn it_checks_its_settings_and_answers_its_probes() {
    let check = |vars: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_console"))
            .arg("check-settings")
            .envs(vars.iter().copied())
            .output()
            .expect("check-settings runs")
    };
    let ok = check(&[]);
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "console: settings ok\n"
    );
    for bad in [
        ("CONSOLE_QUERY_API", "query-api:8081"),
        ("CONSOLE_PROJECTORS", "read-model-projector"),
        ("CONSOLE_PROJECTORS", "read-model-projector=not a url"),
    ] {
        let refused = check(&[bad]);
        assert!(!refused.status.success(), "{bad:?} was taken");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains(bad.0), "{bad:?}: {said}");
    }
    let console = console().await;
    for probe in ["/healthz", "/readyz"] {
        let answer = reqwest::get(format!("{}{probe}", console.1))
            .await
            .expect("an answer");
        assert_eq!(answer.status(), reqwest::StatusCode::OK, "{probe}");
    }
}
