//! The whole stack stops within a bounded time even when the broker is gone: `dev/stack
//! run` starts every service (on this test's database and a broker of its own), events
//! flow through all of them, the broker is killed, then Ctrl-C (SIGINT to the process
//! group, as a terminal sends it) must leave no process behind within 10 s.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::dev_stack::{DevStack, SECRET, signal_group};
use platform::auth::Role;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_is_gone_within_ten_seconds_of_ctrl_c_after_the_broker_died() {
    // A caller's verbose RUST_LOG must not reach the broker (dev/stack pins its level).
    let mut stack = DevStack::start(&[("RUST_LOG", "trace")]).await;
    let (commands, queries) = (stack.commands.clone(), stack.queries.clone());
    let state = stack.state.clone();
    let http = reqwest::Client::new();
    let token = testkit::tokens::hs256_token(SECRET.as_bytes(), "acme", "u1", &[Role::Member], 600);
    let started: Value = http
        .post(format!("http://{commands}/v1/conversations"))
        .bearer_auth(&token)
        .json(&json!({"title": "Before the outage"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["id"].as_str().expect("id").to_owned();
    let read = http
        .get(format!(
            "http://{queries}/v1/conversations/{id}?position={}&wait_ms=3000",
            started["position"].as_str().expect("position")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    // Wait for the whole path: command, relay, broker, projector, read.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut status = read.status();
    while status != 200 && Instant::now() < deadline {
        status = http
            .get(format!(
                "http://{queries}/v1/conversations/{id}?position={}&wait_ms=3000",
                started["position"].as_str().unwrap_or_default()
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
    }
    assert_eq!(status, 200, "the event went through every service");

    // The broker dies; then the stack is stopped while work is still pending.
    let broker: String = std::fs::read_to_string(state.join("broker.pid")).expect("broker pid");
    assert!(
        Command::new("kill")
            .args(["-KILL", broker.trim()])
            .status()
            .unwrap()
            .success()
    );
    let pending = http
        .post(format!("http://{commands}/v1/conversations/{id}/messages"))
        .bearer_auth(&token)
        .json(&json!({"role": "user", "content": "while the broker is down"}))
        .send()
        .await
        .unwrap();
    assert_eq!(pending.status(), 201, "commands need only PostgreSQL");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let interrupted = Instant::now();
    let broker_log = std::fs::metadata(state.join("broker.log"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        broker_log < 100_000,
        "the broker logged {broker_log} bytes: RUST_LOG reached it"
    );
    let group = stack.group();
    assert!(signal_group(group, "-INT"), "the stack is running");
    all_gone(&mut stack, group, interrupted, Duration::from_secs(10)).await;
    eprintln!(
        "everything stopped {:?} after Ctrl-C",
        interrupted.elapsed()
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_stack_run_as_a_background_job_stops_on_ctrl_c_instead_of_restarting() {
    let stack = DevStack::start_ignoring_sigint(&[("THREADLINE_SUPERVISE", "1")]).await;
    let state = stack.state.clone();
    let group = stack.group();
    let interrupted = Instant::now();
    assert!(signal_group(group, "-INT"), "the stack is running");
    // Every service obeys the Ctrl-C with a clean exit; the supervisor must take that as
    // the stack stopping (it used to start them all again).
    let mut stack = stack;
    all_gone(&mut stack, group, interrupted, Duration::from_secs(20)).await;
    let _ = std::fs::remove_dir_all(&state);
}

/// Waits until the script has ended and no process of its group is left, at most
/// `within` after `since`.
async fn all_gone(stack: &mut DevStack, group: u32, since: Instant, within: Duration) {
    loop {
        let script_done = stack.child.try_wait().expect("wait").is_some();
        // `kill -0` on the group fails once no process of it is left.
        if script_done && !signal_group(group, "-0") {
            return;
        }
        assert!(
            since.elapsed() < within,
            "processes left {within:?} after Ctrl-C: {}",
            String::from_utf8_lossy(
                &Command::new("ps")
                    .args(["-o", "pid,args", "-g", &group.to_string()])
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            )
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
