//! The contract as data, for consumers that do not read Rust: the schema-id table with
//! every schema inline (`schemas/contract/schema-ids.json`) and an AsyncAPI 3 document of
//! every topic (`schemas/contract/asyncapi.json`), both generated here from the registry,
//! the topics and the header names; a test fails when the committed files differ from
//! what this code generates (`cargo run -p schemas --example write_contract` rewrites
//! them).

use serde_json::{Map, Value, json};

use crate::events::EventType;
use crate::headers;
use crate::registry::{self, TABLE};
use crate::topics::AggregateKind;

/// The deployment prefix the documents show (`KAFKA_TOPIC_PREFIX`'s default).
pub const DEFAULT_PREFIX: &str = "threadline.";

fn parsed(source: &str) -> Value {
    // The files are compiled in and parsed by the registry's tests: valid JSON.
    serde_json::from_str(source).unwrap_or(Value::Null)
}

fn full_name(schema: &Value) -> String {
    let name = schema["name"].as_str().unwrap_or_default();
    match schema["namespace"].as_str() {
        Some(ns) => format!("{ns}.{name}"),
        None => name.to_owned(),
    }
}

/// Every schema version ever published: id, event type, version, aggregate (topic), the
/// registry subject, whether it is the latest, and the Avro schema itself.
pub fn schema_ids() -> Value {
    let rows: Vec<Value> = TABLE
        .iter()
        .map(|row| {
            let schema = parsed(row.source);
            let kind = row.event_type.aggregate();
            json!({
                "id": row.id.0,
                "event_type": row.event_type.as_str(),
                "version": row.version,
                "aggregate_type": kind.as_str(),
                "topic": kind.topic(DEFAULT_PREFIX),
                "subject": format!("{}-{}", kind.topic(DEFAULT_PREFIX), full_name(&schema)),
                "latest": registry::latest(row.event_type).id == row.id,
                "file": format!("schemas/avro/{}", row.file),
                "schema": schema,
            })
        })
        .collect();
    json!({
        "description": "Threadline's schema-id table. A record's value is the Confluent wire format: byte 0 is 0, bytes 1-4 the big-endian id below, the rest an Avro binary datum written with that id's schema. Ids are never reused; a new version of an event is a new id. Topics are shown with the default prefix `threadline.`.",
        "wire_format": "confluent",
        "subject_name_strategy": "TopicRecordNameStrategy",
        "schemas": rows,
    })
}

/// The headers of every record, as AsyncAPI's (JSON Schema) message headers. Kafka
/// header values are bytes: each is UTF-8 text.
fn header_schema() -> Value {
    let text = |description: &str| json!({"type": "string", "description": description});
    let mut properties = Map::new();
    for (name, schema) in [
        (
            headers::CONTENT_TYPE,
            json!({"type": "string", "const": headers::AVRO_CONTENT_TYPE}),
        ),
        (
            headers::EVENT_TYPE,
            text(
                "The event type (ConversationStarted, ...): which schema family the value belongs to.",
            ),
        ),
        (
            headers::EVENT_ID,
            json!({"type": "string", "format": "uuid", "description": "Unique per event and kept on re-delivery: de-duplicate by it."}),
        ),
        (
            headers::AGGREGATE_TYPE,
            text(
                "The aggregate type (the topic's); with the record key (the aggregate id) it names the stream.",
            ),
        ),
        (
            headers::SEQUENCE,
            json!({"type": "string", "pattern": "^[1-9][0-9]*$", "description": "The event's place in its aggregate's stream: 1, 2, 3, ... without gaps. (aggregate_type, key, sequence) is unique too."}),
        ),
        (
            headers::GLOBAL_POSITION,
            json!({"type": "string", "pattern": "^[0-9]+$", "description": "The event store's global position."}),
        ),
        (
            headers::COMMIT_POSITION,
            json!({"type": "string", "pattern": "^[0-9]+\\.[0-9]+$", "description": "<tx_id>.<global_position>: the committed global order across topics (compare numerically, tx_id first)."}),
        ),
        (
            headers::RECORDED_AT_MS,
            json!({"type": "string", "pattern": "^[0-9]+$", "description": "When the event store recorded the event, milliseconds since the Unix epoch."}),
        ),
        (headers::TENANT_ID, text("The tenant the event belongs to.")),
        (
            headers::USER_ID,
            text(
                "Who caused the event: their id (the `sub` of their tokens, or a service's name), or with data protection on their pseudonym `pseudonym:<uuid>`, which a service token resolves at `GET /v1/pseudonyms/{pseudonym}` until the person is erased (absent for some system events).",
            ),
        ),
        (
            headers::CORRELATION_ID,
            text("Correlation id of the request that caused the event."),
        ),
        (
            headers::CAUSATION_ID,
            text("What caused it: the request's id, or the event a process manager answered."),
        ),
        (
            headers::TRACEPARENT,
            text("W3C trace context of the request that caused the event."),
        ),
        (
            headers::TRACESTATE,
            text("W3C trace state, when the request had one."),
        ),
    ] {
        properties.insert(name.to_owned(), schema);
    }
    json!({
        "type": "object",
        "required": [headers::CONTENT_TYPE, headers::EVENT_TYPE, headers::EVENT_ID, headers::AGGREGATE_TYPE,
                     headers::SEQUENCE, headers::GLOBAL_POSITION, headers::COMMIT_POSITION, headers::RECORDED_AT_MS,
                     headers::TENANT_ID],
        "properties": properties,
    })
}

fn channel_name(kind: AggregateKind) -> String {
    kind.as_str().to_owned()
}

/// The AsyncAPI 3.0 document of every topic: one channel per aggregate type, one message
/// per event type (its latest Avro schema, every schema id it may carry, the headers, the
/// key), and the guarantees consumers can build on.
pub fn asyncapi() -> Value {
    let mut messages = Map::new();
    for t in EventType::ALL {
        let latest = registry::latest(t);
        let ids: Vec<u32> = registry::versions(t).iter().map(|v| v.id.0).collect();
        let schema = parsed(latest.source);
        messages.insert(
            t.as_str().to_owned(),
            json!({
                "name": t.as_str(),
                "title": t.as_str(),
                "summary": schema["doc"],
                "contentType": headers::AVRO_CONTENT_TYPE,
                "headers": {"$ref": "#/components/schemas/EventHeaders"},
                "payload": {
                    "schemaFormat": "application/vnd.apache.avro+json;version=1.9.0",
                    "schema": schema,
                },
                "bindings": {"kafka": {
                    "key": {"type": "string", "format": "uuid", "description": "The aggregate id: every event of one aggregate has the same key, hence one partition and its order."},
                    "schemaIdLocation": "payload",
                    "schemaIdPayloadEncoding": "confluent",
                    "schemaLookupStrategy": "TopicRecordNameStrategy",
                    "bindingVersion": "0.5.0",
                }},
                "x-schema-ids": ids,
                "x-latest-schema-id": latest.id.0,
                "x-webhook-type": t.webhook_type(),
            }),
        );
    }
    let mut channels = Map::new();
    let mut operations = Map::new();
    for kind in AggregateKind::ALL {
        let name = channel_name(kind);
        let refs: Map<String, Value> = EventType::ALL
            .into_iter()
            .filter(|t| t.aggregate() == kind)
            .map(|t| {
                (
                    t.as_str().to_owned(),
                    json!({"$ref": format!("#/components/messages/{}", t.as_str())}),
                )
            })
            .collect();
        let op_refs: Vec<Value> = refs
            .keys()
            .map(|m| json!({"$ref": format!("#/channels/{name}/messages/{m}")}))
            .collect();
        channels.insert(
            name.clone(),
            json!({
                "address": format!("{{prefix}}{}.events", kind.as_str()),
                "title": format!("{} events", kind.as_str()),
                "description": format!("Every event of every {} aggregate, keyed by the aggregate id.", kind.as_str()),
                "parameters": {"prefix": {"description": "The deployment's KAFKA_TOPIC_PREFIX.", "default": DEFAULT_PREFIX}},
                "messages": refs,
            }),
        );
        operations.insert(
            format!("receive_{name}"),
            json!({
                "action": "receive",
                "channel": {"$ref": format!("#/channels/{name}")},
                "messages": op_refs,
            }),
        );
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Threadline events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every event Threadline's event store commits, published by its outbox relay. Guarantees: every committed event is published (none lost), at least once: a re-delivered record keeps its `event_id` header, so de-duplicate by it (or by aggregate_type + key + sequence). Within an aggregate (one key, one partition) records come in `sequence` order without gaps; across aggregates and topics, `commit_position` gives the committed global order. The value is Avro in the Confluent wire format; the schema-id table with every schema is schemas/contract/schema-ids.json. A new version of an event is a new schema id; the latest version reads every earlier one (backward compatible).",
        },
        "defaultContentType": headers::AVRO_CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {"EventHeaders": header_schema()},
        },
    })
}
