//! The program itself, run as command-api runs it (without the limits, which
//! `crates/commands/tests/intake.rs` holds): text out, a malformed file refused with its
//! exit status, wrong usage refused.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_extractor"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the extractor");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write the file");
    child.wait_with_output().expect("wait for the extractor")
}

#[test]
fn a_pdf_comes_out_as_its_text() {
    let out = run(
        &["pdf"],
        &testkit::files::pdf_with_text(&["Refunds within 14 days."]),
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(text.contains("Refunds within 14 days."), "{text:?}");
}

#[test]
fn a_malformed_pdf_exits_with_status_3_and_says_why_on_stderr() {
    let out = run(&["pdf"], b"%PDF-1.7\nnot really a pdf");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(!out.stderr.is_empty());
}

#[test]
fn wrong_usage_exits_with_status_2() {
    for args in [&[][..], &["png"][..], &["pdf", "extra"][..]] {
        let out = run(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
