//! The README's walk-through (`dev/walkthrough`) against a stack started as `dev/stack run`
//! starts it, twice: it must work on a fresh stack and again on the same one.

use std::process::Command;

use e2e::dev_stack::{DevStack, SECRET, repo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_and_runs_again() {
    let stack = DevStack::start(&[]).await;
    for run in 1..=2 {
        let out = Command::new(repo().join("dev/walkthrough"))
            .env("COMMAND_API", format!("http://{}", stack.commands))
            .env("QUERY_API", format!("http://{}", stack.queries))
            .env("JWT_HS256_SECRET", SECRET)
            .output()
            .expect("run dev/walkthrough");
        assert!(
            out.status.success(),
            "run {run}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The dashboards read only metrics the running services export (lag gauges appear
    // at the first lag report: scrape until every name is there, for a while).
    let expressions = e2e::dashboards::expressions(&repo().join("deploy/grafana/dashboards"));
    assert!(expressions.len() >= 10, "{expressions:?}");
    let mut wanted = std::collections::BTreeMap::new();
    for (file, expr) in &expressions {
        let names = e2e::dashboards::metric_names(expr);
        assert!(!names.is_empty(), "{file}: {expr} reads no metric");
        for name in names {
            wanted.insert(name, format!("{file}: {expr}"));
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let exported = scrape(&stack).await;
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(name, _)| !exported.contains(*name))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dashboards read metrics no service exports: {missing:?}; exported: {exported:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The metric names every service of the stack exports now.
async fn scrape(stack: &DevStack) -> std::collections::BTreeSet<String> {
    let http = reqwest::Client::new();
    let mut exported = std::collections::BTreeSet::new();
    let targets = [
        ("command-api", stack.commands.clone()),
        ("query-api", stack.queries.clone()),
    ]
    .into_iter()
    .chain(
        stack
            .projectors
            .iter()
            .map(|(b, a)| (b.as_str(), a.clone())),
    );
    for (service, addr) in targets {
        let text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{service} /metrics: {e}"))
            .text()
            .await
            .expect("metrics text");
        exported.extend(e2e::dashboards::exported(&text));
    }
    exported
}
