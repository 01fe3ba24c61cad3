//! Hostile uploads against the real command-api process (the binary, not the router in
//! this test): it keeps serving while each upload is refused, its memory stays within a
//! stated bound, and no extraction outlives its request.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use platform::auth::Role;
use reqwest::StatusCode;
use serde_json::Value;
use testkit::net::free_addr;

/// command-api's peak resident memory over this whole test, uploads of 10 MiB files
/// included. The files' own copies (body, hash, blob) are a few times 10 MiB; a Flate
/// bomb inflated in this process would be gigabytes.
const PEAK_RSS_MIB: u64 = 100;

struct Service {
    child: Child,
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    async fn start(extra: &[(&str, &str)]) -> Service {
        let db = testkit::env::database().await;
        let addr = free_addr();
        let mut command = Command::new(env!("CARGO_BIN_EXE_command-api"));
        command
            .env("DATABASE_URL", &db.config.url)
            .env("COMMAND_API_ADDR", &addr)
            .env(
                "JWT_HS256_SECRET",
                std::str::from_utf8(testkit::tokens::SECRET).expect("ASCII"),
            )
            .env("RELAY_ENABLED", "false")
            .env("EXTRACT_CPU_SECS", "3")
            .env("EXTRACT_TIMEOUT_MS", "4000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command.spawn().expect("start command-api");
        let service = Service {
            child,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            token: testkit::tokens::token("acme", &[Role::Admin, Role::Member]),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !service.healthy().await {
            assert!(Instant::now() < deadline, "command-api did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        service
    }

    async fn healthy(&self) -> bool {
        let probe = self.http.get(format!("{}/healthz", self.base)).send();
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Ok(r)) if r.status() == StatusCode::OK
        )
    }

    async fn upload(&self, bytes: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/v1/knowledge?title=upload", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/pdf")
            .body(bytes)
            .send()
            .await
            .expect("upload");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A command of another kind, answered while an upload is being read.
    async fn start_conversation(&self) -> StatusCode {
        self.http
            .post(format!("{}/v1/conversations", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"title": "meanwhile"}))
            .send()
            .await
            .expect("start a conversation")
            .status()
    }

    /// command-api's peak resident memory, in MiB.
    fn peak_mib(&self) -> u64 {
        testkit::procs::status_kib(self.child.id(), "VmHWM:") / 1024
    }

    /// CPU seconds of command-api's children that it waited for.
    fn children_cpu_secs(&self) -> f64 {
        testkit::procs::children_cpu_secs(self.child.id())
    }

    async fn until_no_children(&self, within: Duration) {
        testkit::procs::until_no_children(self.child.id(), within).await;
    }
}

/// Uploads `bytes` while, over and over, the service is asked for its health and given
/// another command, each answered in time; an upload that takes a second or more has seen
/// at least one such round finish.
async fn upload_while_serving(service: &Service, bytes: Vec<u8>) -> (StatusCode, Value) {
    let started = Instant::now();
    let rounds = std::cell::Cell::new(0);
    let probes = async {
        loop {
            assert!(
                service.healthy().await,
                "command-api stopped answering during an upload"
            );
            assert_eq!(
                service.start_conversation().await,
                StatusCode::CREATED,
                "a command during an upload"
            );
            rounds.set(rounds.get() + 1);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let answer = tokio::select! {
        answer = service.upload(bytes) => answer,
        () = probes => unreachable!("the probes never end"),
    };
    if started.elapsed() >= Duration::from_secs(1) {
        assert!(
            rounds.get() > 0,
            "nothing was answered during a slow upload"
        );
    }
    answer
}

#[tokio::test]
async fn hostile_pdfs_are_refused_while_the_service_keeps_serving_within_its_memory() {
    let service = Service::start(&[]).await;
    let max = commands::intake::DEFAULT_MAX_BYTES;
    let files: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "a form that draws itself",
            testkit::files::pdf_self_drawing_form(),
            &["file_too_complex"],
        ),
        (
            "a Flate bomb at the upload limit",
            testkit::files::pdf_flate_bomb(max - 1024),
            &["file_too_complex"],
        ),
        (
            "a page tree that fans out",
            testkit::files::pdf_page_tree_fanout(40, 6),
            &["file_too_complex"],
        ),
        (
            "forms that draw forms",
            testkit::files::pdf_form_fanout(50, 4),
            &["file_too_complex"],
        ),
        (
            "a truncated file",
            testkit::files::pdf_truncated(50),
            &["file_unreadable"],
        ),
        (
            "thousands of fonts",
            testkit::files::pdf_many_fonts(5_000),
            // Read within the limits, or refused by them.
            &["", "file_too_complex"],
        ),
    ];
    let runs = files.len() as f64;
    for (what, bytes, codes) in files {
        let (status, body) = upload_while_serving(&service, bytes).await;
        let code = body["code"].as_str().unwrap_or_default();
        if status == StatusCode::CREATED {
            assert!(codes.contains(&""), "{what}: accepted: {body}");
        } else {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
            assert!(codes.contains(&code), "{what}: {body}");
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(
                !detail.contains("PDF error"),
                "{what}: the parser's own words: {detail}"
            );
        }
        service.until_no_children(Duration::from_secs(1)).await;
    }
    let peak_mib = service.peak_mib();
    eprintln!("command-api peak memory over the hostile uploads: {peak_mib} MiB");
    assert!(
        peak_mib < PEAK_RSS_MIB,
        "command-api's peak memory was {peak_mib} MiB"
    );
    // Each extraction ended by its own limits: 3 CPU seconds, SIGKILL one second later.
    let cpu = service.children_cpu_secs();
    assert!(cpu <= runs * 4.5, "extractions used {cpu} CPU seconds");
    assert!(service.healthy().await);
}

#[tokio::test]
async fn an_upload_refused_for_time_leaves_no_extraction_running() {
    // The request times out (408) long before the extraction's own limits.
    let service = Service::start(&[
        ("HTTP_REQUEST_TIMEOUT_MS", "1000"),
        ("EXTRACT_CPU_SECS", "60"),
        ("EXTRACT_TIMEOUT_MS", "60000"),
    ])
    .await;
    let (status, body) = service.upload(testkit::files::pdf_form_fanout(50, 4)).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    service.until_no_children(Duration::from_secs(1)).await;
    let cpu_after = service.children_cpu_secs();
    assert!(
        cpu_after < 2.0,
        "the refused extraction used {cpu_after} CPU seconds"
    );
}
