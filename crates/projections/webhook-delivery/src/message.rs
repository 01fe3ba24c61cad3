//! What is sent: a message's id (the `webhook-id`, stable for an event and an endpoint, so
//! receivers de-duplicate by it) and its body (`{type, timestamp, data}`, under
//! [`BODY_MAX`] bytes, or a thin form naming the event when the event is larger).

use chrono::SecondsFormat;
use projection::Envelope;
use serde_json::{Value, json};
use uuid::Uuid;

/// The largest body sent; a larger event is sent thin (ids only, to fetch it from the
/// audit API).
pub const BODY_MAX: usize = 20 * 1024;

/// The `webhook-id` of the message carrying `event_id` to `endpoint_id`.
pub fn message_id(event_id: Uuid, endpoint_id: Uuid) -> String {
    const NAMESPACE: Uuid = Uuid::from_u128(0x7468_7265_6164_6c69_6e65_0000_0000_0077);
    let id = Uuid::new_v5(&NAMESPACE, format!("{event_id}/{endpoint_id}").as_bytes());
    format!("msg_{}", id.simple())
}

/// The body of `event`'s message, as `webhook_type`.
pub fn body(webhook_type: &str, e: &Envelope) -> String {
    let timestamp = e.recorded_at.to_rfc3339_opts(SecondsFormat::Millis, true);
    // The contract's serde form is tagged by event type: the data is what is inside.
    let data = match serde_json::to_value(&e.event) {
        Ok(Value::Object(tagged)) => tagged.into_iter().next().map_or(Value::Null, |(_, v)| v),
        _ => Value::Null,
    };
    let full = json!({"type": webhook_type, "timestamp": timestamp, "data": data}).to_string();
    if full.len() <= BODY_MAX {
        return full;
    }
    json!({
        "type": webhook_type,
        "timestamp": timestamp,
        "data": {
            "thin": true,
            "event_id": e.event_id,
            "aggregate_type": e.aggregate_type,
            "aggregate_id": e.aggregate_id,
            "sequence": e.sequence,
        },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{Event, MessageSent, Role};

    fn envelope(content: String) -> Envelope {
        testkit::projection::envelope(
            Event::MessageSent(MessageSent {
                sealed: None,
                conversation_id: Uuid::new_v4(),
                message_id: Uuid::new_v4(),
                role: Role::User,
                content,
                model: None,
                prompt_tokens: None,
                completion_tokens: None,
                sent_at: schemas::timestamp_now(),
                reply_to: None,
                latency_ms: None,
                sources: Vec::new(),
            }),
            "ann",
        )
    }

    #[test]
    fn a_body_carries_the_events_fields_and_a_large_one_goes_thin() {
        let small = envelope("hello".into());
        let body: Value = serde_json::from_str(&body("message.sent", &small)).expect("json");
        assert_eq!(body["type"], "message.sent");
        assert_eq!(body["data"]["content"], "hello");
        assert_eq!(body["data"]["role"], "user");

        let large = envelope("x".repeat(30_000));
        let text = super::body("message.sent", &large);
        assert!(text.len() < BODY_MAX);
        let body: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(body["data"]["thin"], true);
        assert_eq!(body["data"]["event_id"], large.event_id.to_string());
    }

    #[test]
    fn message_ids_are_stable_per_event_and_endpoint() {
        let (e, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(message_id(e, a), message_id(e, a));
        assert_ne!(message_id(e, a), message_id(e, b));
        assert!(message_id(e, a).starts_with("msg_") && message_id(e, a).len() == 36);
    }
}
