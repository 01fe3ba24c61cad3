//! Bad provider output (invalid JSON, no choices, an empty answer, a huge body, a stall)
//! ends as a retryable error, promptly: never a panic, never a caller waiting forever.

use std::time::Duration;

use llm::{ChatProvider, ProviderError};
use serde_json::json;

use crate::server::{Reply, Server, anthropic_answer, openai_answer};
use crate::{anthropic, ends, openai, question};

/// Short, for the stalls; bodies (huge ones too) are read by a twin with a timeout long
/// enough for a loaded machine, so only the size limit can end those.
const TIMEOUT: Duration = Duration::from_millis(500);
const PATIENT: Duration = Duration::from_secs(15);
const HUGE: usize = 11 * 1024 * 1024;

fn cases(anthropic: bool) -> Vec<Reply> {
    let no_text = if anthropic {
        let mut a = anthropic_answer("", 5, 0);
        a["content"] = json!([]);
        a
    } else {
        json!({"choices": [{"message": {"content": ""}, "finish_reason": "stop"}]})
    };
    vec![
        Reply::Raw(200, "not json {".into()),
        Reply::Raw(200, String::new()),
        Reply::Raw(
            200,
            "{\"choices\": [{\"message\": {\"content\": \"cut".into(),
        ),
        Reply::Json(json!({"choices": []})),
        Reply::Json(json!([1, 2, 3])),
        Reply::Json(json!({"error": {"message": "upstream exploded"}})),
        Reply::Json(no_text),
        Reply::Huge(HUGE),
        Reply::HugeChunked(HUGE),
        Reply::Stall,
        Reply::StallBody,
    ]
}

#[tokio::test]
async fn bad_output_of_either_provider_ends_as_a_retryable_error() {
    for is_anthropic in [false, true] {
        let good = if is_anthropic {
            anthropic_answer("fine", 1, 1)
        } else {
            openai_answer("fine", 1, 1)
        };
        let server = Server::start(Reply::Json(good)).await;
        let make = |timeout| -> Box<dyn ChatProvider> {
            if is_anthropic {
                Box::new(anthropic("a", &server, None, timeout))
            } else {
                Box::new(openai("o", &server, None, timeout))
            }
        };
        let (provider, patient) = (make(TIMEOUT), make(PATIENT));
        for case in cases(is_anthropic) {
            let label = format!("anthropic={is_anthropic} {:.80?}", case);
            server.script([case.clone()]);
            let stall = matches!(case, Reply::Stall | Reply::StallBody);
            let provider = if stall { &provider } else { &patient };
            let outcome = ends(provider.complete(&question("hi"))).await;
            let Err(e) = outcome else {
                panic!("{label}: {outcome:?}");
            };
            assert!(e.is_retryable(), "{label}: {e:?}");
            match case {
                Reply::Stall | Reply::StallBody => {
                    assert_eq!(e, ProviderError::TimedOut { after: TIMEOUT }, "{label}")
                }
                Reply::Huge(_) | Reply::HugeChunked(_) => {
                    assert!(
                        e.to_string().contains("larger than 4194304 bytes"),
                        "{label}: {e}"
                    )
                }
                _ => assert!(
                    e.to_string().contains("malformed")
                        || e.to_string().contains("upstream exploded"),
                    "{label}: {e}"
                ),
            }
        }
        // None of it left the provider unusable.
        let c = ends(provider.complete(&question("hi")))
            .await
            .expect("answers again");
        assert_eq!(c.text, "fine");
    }
}
