//! The whole stack stops within a bounded time even when the broker is gone: `dev/stack
//! run` starts every service (on this test's database and a broker of its own), events
//! flow through all of them, the broker is killed, then Ctrl-C (SIGINT to the process
//! group, as a terminal sends it) must leave no process behind within 10 s.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use platform::auth::Role;
use serde_json::{Value, json};

const SECRET: &str = "shutdown-test-secret-shutdown-test-secret";

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

/// Makes sure the service binaries in `target/debug` are built from the code under test.
/// `dev/stack test` has built them already with these very settings, so this is a
/// freshness check that takes a moment; run alone, this test builds what is stale.
fn build_binaries(root: &Path) {
    let mut cargo = Command::new(env!("CARGO"));
    // Cargo sets these for a test process; a build script that watches one of them
    // (ring watches CARGO_MANIFEST_DIR) would count as changed and rebuild everything.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || matches!(
                name.as_str(),
                "CARGO_TARGET_TMPDIR" | "CARGO_RUSTC_CURRENT_DIR"
            )
        {
            cargo.env_remove(name);
        }
    }
    let status = cargo
        // What `cargo nextest run --workspace` and `cargo test --workspace` build first.
        .args(["test", "--workspace", "--no-run", "--quiet"])
        .current_dir(root)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the service binaries failed");
}

/// Sends `signal` to every process of group `pgid`; false when the group is empty.
fn signal_group(pgid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn wait_ready(http: &reqwest::Client, url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kills the group if the test fails half-way, so nothing outlives it.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        signal_group(self.0, "-KILL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_is_gone_within_ten_seconds_of_ctrl_c_after_the_broker_died() {
    let root = repo();
    build_binaries(&root);
    let db = testkit::env::database().await;
    let name = format!("shutdown-{}", std::process::id());
    let (commands, queries) = (free_addr(), free_addr());
    let mut stack = Command::new(root.join("dev/stack"));
    stack
        .arg("run")
        .current_dir(&root)
        .env("DATABASE_URL", &db.config.url)
        .env_remove("KAFKA_BROKERS")
        .env_remove("THREADLINE_KAFKA_PORT")
        .env("THREADLINE_STACK_NAME", &name)
        .env("THREADLINE_NO_BUILD", "1")
        .env("JWT_HS256_SECRET", SECRET)
        .env("COMMAND_API_ADDR", &commands)
        .env("QUERY_API_ADDR", &queries)
        .env("READ_MODEL_PROJECTOR_ADDR", free_addr())
        .env("NOTIFICATIONS_PROJECTOR_ADDR", free_addr())
        .env("KAFKA_TOPIC_PREFIX", format!("{name}."))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, like a shell job: Ctrl-C signals all of it.
        .process_group(0);
    let mut child = stack.spawn().expect("start dev/stack run");
    let group = Group(child.id());
    let state = root.join(".stack").join(&name);

    let http = reqwest::Client::new();
    wait_ready(
        &http,
        &format!("http://{commands}/readyz"),
        Duration::from_secs(120),
    )
    .await;
    wait_ready(
        &http,
        &format!("http://{queries}/readyz"),
        Duration::from_secs(60),
    )
    .await;
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
    assert!(signal_group(group.0, "-INT"), "the stack is running");
    loop {
        let script_done = child.try_wait().expect("wait").is_some();
        // `kill -0` on the group fails once no process of it is left.
        if script_done && !signal_group(group.0, "-0") {
            break;
        }
        assert!(
            interrupted.elapsed() < Duration::from_secs(10),
            "processes left 10 s after Ctrl-C: {}",
            String::from_utf8_lossy(
                &Command::new("ps")
                    .args(["-o", "pid,args", "-g", &group.0.to_string()])
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            )
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "everything stopped {:?} after Ctrl-C",
        interrupted.elapsed()
    );
    let _ = std::fs::remove_dir_all(&state);
}
