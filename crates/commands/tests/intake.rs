//! Hostile uploads against the real `extractor` program under its limits: whatever the
//! file does, this process goes on, the upload ends as a refusal, and no child outlives
//! its run. (nextest runs each test in a process of its own, so this process's children
//! are this test's.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use commands::IntakeError;
use commands::intake::{self, Extractor, ExtractorSettings};

const PDF: &str = "application/pdf";
const MAX: usize = intake::DEFAULT_MAX_BYTES;

/// Tight limits, so the slow cases end within seconds.
fn extractor() -> Extractor {
    let extractor = Extractor::new(ExtractorSettings {
        cpu_secs: 3,
        timeout: Duration::from_secs(4),
        ..ExtractorSettings::default()
    });
    extractor
        .check()
        .expect("the extractor program is built (cargo build -p extractor)");
    extractor
}

async fn extract(extractor: &Extractor, bytes: Vec<u8>) -> Result<String, IntakeError> {
    intake::extract(extractor, PDF, Arc::from(bytes), MAX).await
}

/// This process's children running now.
fn children() -> Vec<u32> {
    testkit::procs::children(std::process::id())
}

/// CPU seconds of this process's children that have been waited for.
fn children_cpu_secs() -> f64 {
    testkit::procs::children_cpu_secs(std::process::id())
}

async fn until_no_children(within: Duration) {
    testkit::procs::until_no_children(std::process::id(), within).await;
}

#[tokio::test]
async fn a_form_that_draws_itself_ends_its_child_not_this_process() {
    let extractor = extractor();
    let file = testkit::files::pdf_self_drawing_form();
    assert!(file.len() < 1024, "{} bytes", file.len());
    assert_eq!(
        extract(&extractor, file).await,
        Err(IntakeError::TooComplex(
            "it needs more memory or time than allowed"
        ))
    );
    // This process is alive and still extracts a good file.
    let text = extract(&extractor, testkit::files::pdf_with_text(&["still here"]))
        .await
        .expect("a good file after a bad one");
    assert!(text.contains("still here"), "{text:?}");
    assert!(children().is_empty());
}

#[tokio::test]
async fn a_flate_bomb_at_the_upload_limit_is_refused_within_the_memory_limit() {
    let extractor = extractor();
    let file = testkit::files::pdf_flate_bomb(MAX - 1024);
    assert!(file.len() <= MAX && file.len() > MAX - 4096);
    let before = peak_rss_kib();
    assert_eq!(
        extract(&extractor, file).await,
        Err(IntakeError::TooComplex(
            "it needs more memory or time than allowed"
        ))
    );
    // The bomb inflated in the child: this process grew by the file and its copies only.
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(grown_mib < 64, "this process grew by {grown_mib} MiB");
    assert!(children().is_empty());
}

#[tokio::test]
async fn a_page_tree_that_fans_out_is_stopped_by_the_memory_limit() {
    let extractor = extractor();
    let result = extract(&extractor, testkit::files::pdf_page_tree_fanout(40, 6)).await;
    assert!(
        matches!(result, Err(IntakeError::TooComplex(_))),
        "{result:?}"
    );
    assert!(children().is_empty());
}

#[tokio::test]
async fn forms_that_draw_forms_are_stopped_by_the_cpu_limit() {
    let extractor = extractor();
    let started = Instant::now();
    let cpu_before = children_cpu_secs();
    let result = extract(&extractor, testkit::files::pdf_form_fanout(50, 4)).await;
    assert!(
        matches!(result, Err(IntakeError::TooComplex(_))),
        "{result:?}"
    );
    let limits = extractor.settings();
    // Ended by the CPU limit (SIGXCPU, then SIGKILL a second later) or the deadline.
    assert!(
        started.elapsed() < limits.timeout + Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let cpu = children_cpu_secs() - cpu_before;
    assert!(
        cpu <= (limits.cpu_secs + 1) as f64 + 0.5,
        "the child used {cpu} CPU seconds"
    );
    assert!(children().is_empty());
}

#[tokio::test]
async fn a_truncated_file_and_garbage_are_unreadable_without_the_parsers_words() {
    let extractor = extractor();
    for file in [
        testkit::files::pdf_truncated(50),
        b"%PDF-1.7\nnot really a pdf".to_vec(),
    ] {
        let refused = extract(&extractor, file).await;
        assert_eq!(refused, Err(IntakeError::Unreadable));
        let said = refused.unwrap_err().to_string();
        assert_eq!(said, "the PDF is malformed and cannot be read");
    }
}

#[tokio::test]
async fn a_page_with_thousands_of_fonts_is_read_or_refused_within_the_limits() {
    let extractor = extractor();
    let started = Instant::now();
    match extract(&extractor, testkit::files::pdf_many_fonts(5_000)).await {
        Ok(text) => assert!(text.contains("w4999"), "{}", &text[..text.len().min(200)]),
        Err(e) => assert!(matches!(e, IntakeError::TooComplex(_)), "{e:?}"),
    }
    assert!(started.elapsed() < extractor.settings().timeout + Duration::from_secs(2));
    assert!(children().is_empty());
}

#[tokio::test]
async fn a_caller_that_stops_waiting_kills_the_child_and_frees_its_permit() {
    let extractor = Extractor::new(ExtractorSettings {
        cpu_secs: 60,
        timeout: Duration::from_secs(60),
        concurrency: 1,
        ..ExtractorSettings::default()
    });
    let slow = testkit::files::pdf_form_fanout(50, 4);
    let run = extract(&extractor, slow.clone());
    // The request is refused (a 408, a dropped connection) while the child runs.
    let stopped = tokio::time::timeout(Duration::from_millis(500), run).await;
    assert!(stopped.is_err(), "the slow file finished: {stopped:?}");
    until_no_children(Duration::from_secs(2)).await;
    // The one permit is free again: a good file goes through at once.
    let text = tokio::time::timeout(
        Duration::from_secs(10),
        extract(&extractor, testkit::files::pdf_with_text(&["next"])),
    )
    .await
    .expect("the permit was released")
    .expect("a good file");
    assert!(text.contains("next"));
}

#[tokio::test]
async fn at_most_the_configured_number_of_children_run_at_once() {
    let extractor = Extractor::new(ExtractorSettings {
        cpu_secs: 2,
        timeout: Duration::from_secs(3),
        concurrency: 2,
        ..ExtractorSettings::default()
    });
    let slow = testkit::files::pdf_form_fanout(50, 4);
    let runs = futures::future::join_all((0..5).map(|_| extract(&extractor, slow.clone())));
    let mut most = 0;
    let watch = async {
        loop {
            most = most.max(children().len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let results = tokio::select! {
        results = runs => results,
        _ = watch => unreachable!(),
    };
    assert_eq!(results.len(), 5);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(IntakeError::TooComplex(_)))),
        "{results:?}"
    );
    assert_eq!(most, 2, "children running at once");
}

#[tokio::test]
async fn the_child_runs_without_environment_and_outside_this_network_namespace() {
    // SAFETY: set before any other thread of this test reads the environment.
    unsafe { std::env::set_var("THREADLINE_TEST_SECRET", "must-not-leak") };
    let extractor = extractor();
    let run = tokio::spawn({
        let extractor = extractor.clone();
        async move { extract(&extractor, testkit::files::pdf_form_fanout(50, 4)).await }
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    let child = loop {
        if let Some(pid) = children().first().copied() {
            // Past exec: it runs the extractor, not our own image.
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            if exe.ends_with("extractor") {
                break pid;
            }
        }
        assert!(Instant::now() < deadline, "no extractor child appeared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let environ = std::fs::read(format!("/proc/{child}/environ")).expect("environ");
    assert!(environ.is_empty(), "{}", String::from_utf8_lossy(&environ));
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns");
    assert_ne!(ns(&child.to_string()), ns("self"), "same network namespace");
    let limits = std::fs::read_to_string(format!("/proc/{child}/limits")).expect("limits");
    let line = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("Max address space"),
        "Max address space 536870912 536870912 bytes"
    );
    assert_eq!(line("Max cpu time"), "Max cpu time 3 4 seconds");
    assert_eq!(line("Max core file size"), "Max core file size 0 0 bytes");
    assert_eq!(line("Max file size"), "Max file size 0 0 bytes");
    run.abort();
    let _ = run.await;
    until_no_children(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_missing_program_is_the_servers_fault_not_the_files() {
    let extractor = Extractor::new(ExtractorSettings {
        path: "/nonexistent/extractor".into(),
        ..ExtractorSettings::default()
    });
    assert!(matches!(
        extractor.check(),
        Err(IntakeError::ExtractorUnavailable(_))
    ));
    let refused = extract(&extractor, testkit::files::pdf_with_text(&["x"])).await;
    assert!(
        matches!(refused, Err(IntakeError::ExtractorUnavailable(_))),
        "{refused:?}"
    );
}

/// This process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    testkit::procs::status_kib(std::process::id(), "VmHWM:")
}
