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
}
