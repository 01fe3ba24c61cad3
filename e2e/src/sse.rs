//! Server-Sent Events as a client reads them: enough for tests and benchmarks of
//! `GET /v1/conversations/{id}/stream`.

use std::time::Duration;

use serde_json::Value;

/// One SSE event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// Reads SSE events from a streaming response until `done` says so (or 20 s pass).
pub async fn read_until(
    resp: &mut reqwest::Response,
    buffer: &mut String,
    mut done: impl FnMut(&Sse) -> bool,
) -> Vec<Sse> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut e = Sse {
                id: None,
                event: "message".into(),
                data: Value::Null,
            };
            let mut is_event = false;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    e.id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    e.event = v.to_owned();
                    is_event = true;
                } else if let Some(v) = line.strip_prefix("data: ") {
                    e.data = serde_json::from_str(v).expect("data is JSON");
                    is_event = true;
                }
            }
            if is_event {
                let stop = done(&e);
                seen.push(e);
                if stop {
                    return seen;
                }
            }
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no matching event within 20 s; saw {seen:?}"))
            .expect("read the stream")
            .unwrap_or_else(|| panic!("the stream ended; saw {seen:?}"));
        buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    }
}
