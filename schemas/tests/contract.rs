//! The contract holds: every event round-trips through the wire format, the schema table
//! is consistent with the files, and every schema version ever committed stays readable.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use chrono::{TimeZone, Utc};
use schemas::registry::{self, TABLE};
use schemas::*;
use uuid::Uuid;

fn at(ms: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .expect("valid timestamp")
}

fn samples() -> Vec<Event> {
    let conversation_id = Uuid::new_v4();
    vec![
        ConversationStarted {
            sealed: None,
            conversation_id,
            tenant_id: "acme".into(),
            title: "Quarterly plan".into(),
            metadata: BTreeMap::from([("channel".into(), "web".into())]),
            started_at: at(1_700_000_000_123),
            started_by: Some("ann".into()),
            assistant: true,
        }
        .into(),
        ConversationStarted {
            sealed: None,
            conversation_id,
            tenant_id: "acme".into(),
            title: "No metadata".into(),
            metadata: BTreeMap::new(),
            started_at: timestamp_now(),
            started_by: None,
            assistant: false,
        }
        .into(),
        MessageSent {
            sealed: None,
            conversation_id,
            message_id: Uuid::new_v4(),
            role: Role::Assistant,
            content: "Here is the draft — with ünïcödé.".into(),
            model: Some("gpt-x".into()),
            prompt_tokens: Some(120),
            completion_tokens: Some(0),
            sent_at: at(1_700_000_000_456),
            reply_to: Some(Uuid::new_v4()),
            latency_ms: Some(1234),
            sources: vec![
                MessageSource {
                    kind: "knowledge".into(),
                    id: Uuid::new_v4(),
                    title: "Refund policy".into(),
                    score: 0.75,
                },
                MessageSource {
                    kind: "message".into(),
                    id: Uuid::new_v4(),
                    title: "Launch plan".into(),
                    score: -0.125,
                },
            ],
        }
        .into(),
        MessageSent {
            sealed: None,
            conversation_id,
            message_id: Uuid::new_v4(),
            role: Role::User,
            content: "hello".into(),
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
            sent_at: at(0),
            reply_to: None,
            latency_ms: None,
            sources: Vec::new(),
        }
        .into(),
        ConversationRenamed {
            sealed: None,
            conversation_id,
            title: "New".into(),
            previous_title: "Old".into(),
            renamed_at: at(1),
        }
        .into(),
        ConversationEnded {
            sealed: None,
            conversation_id,
            reason: Some("resolved".into()),
            ended_at: at(2),
        }
        .into(),
        ConversationEnded {
            sealed: None,
            conversation_id,
            reason: None,
            ended_at: at(3),
        }
        .into(),
        DocumentGenerated {
            sealed: None,
            document_id: Uuid::new_v4(),
            tenant_id: "acme".into(),
            conversation_id,
            kind: DocumentKind::RequirementsSpec,
            title: "Spec".into(),
            format: DocumentFormat::Markdown,
            content: "# Spec\n\n- one".into(),
            source_message_count: 2,
            generator: Generator {
                name: "template".into(),
                version: "1".into(),
            },
            generated_at: at(4),
            prompt_tokens: Some(900),
            completion_tokens: Some(450),
            latency_ms: Some(2_500),
            requested_by: Some("ann".into()),
        }
        .into(),
        DocumentGenerated {
            sealed: None,
            document_id: Uuid::new_v4(),
            tenant_id: "acme".into(),
            conversation_id,
            kind: DocumentKind::MeetingNotes,
            title: "Weekly sync".into(),
            format: DocumentFormat::Markdown,
            content: "# Weekly sync\n\n## Decisions\n\n- ship".into(),
            source_message_count: 7,
            generator: Generator {
                name: "template".into(),
                version: "1".into(),
            },
            generated_at: at(5),
            prompt_tokens: None,
            completion_tokens: None,
            latency_ms: None,
            requested_by: None,
        }
        .into(),
        DocumentRequested {
            sealed: None,
            document_id: Uuid::new_v4(),
            tenant_id: "acme".into(),
            conversation_id,
            kind: DocumentKind::MeetingNotes,
            title: None,
            requested_by: "bob".into(),
            requested_at: at(8),
        }
        .into(),
        DocumentRequested {
            sealed: None,
            document_id: Uuid::new_v4(),
            tenant_id: "acme".into(),
            conversation_id,
            kind: DocumentKind::Summary,
            title: None,
            requested_by: "ann".into(),
            requested_at: at(9),
        }
        .into(),
        DocumentGenerationFailed {
            sealed: None,
            document_id: Uuid::new_v4(),
            conversation_id,
            reason: "every provider failed".into(),
            attempts: 2,
            failed_at: at(10),
        }
        .into(),
        KnowledgeDocumentAdded {
            sealed: None,
            knowledge_id: Uuid::new_v4(),
            tenant_id: "acme".into(),
            title: "Refund policy".into(),
            media_type: "application/pdf".into(),
            sha256: "ab".repeat(32),
            size_bytes: 1234,
            text: "Refunds are issued within 14 days.".into(),
            added_by: Some("ann".into()),
            added_at: at(5),
        }
        .into(),
        KnowledgeDocumentRemoved {
            knowledge_id: Uuid::new_v4(),
            removed_at: at(6),
        }
        .into(),
        AssistantReplyFailed {
            sealed: None,
            conversation_id,
            message_id: Uuid::new_v4(),
            reason: "primary: 503; backup: timed out after 60 s".into(),
            attempts: 4,
            failed_at: at(7),
            asked_by: Some("ann".into()),
        }
        .into(),
        AssistantReplyRequested {
            sealed: None,
            conversation_id,
            message_id: Uuid::new_v4(),
            requested_by: "ann".into(),
            requested_at: at(8),
        }
        .into(),
        WebhookEndpointCreated {
            endpoint_id: Uuid::new_v4(),
            tenant_id: "acme".into(),
            url: "https://hooks.example.com/threadline".into(),
            event_types: vec!["message.sent".into(), "document.generated".into()],
            description: "CRM".into(),
            sealed_secret: "v1.00000000.AAAA".into(),
            created_by: "ann".into(),
            created_at: at(11),
        }
        .into(),
        WebhookEndpointUpdated {
            endpoint_id: Uuid::new_v4(),
            url: "https://hooks.example.com/v2".into(),
            event_types: vec!["*".into()],
            description: String::new(),
            updated_at: at(12),
        }
        .into(),
        WebhookSecretRotated {
            endpoint_id: Uuid::new_v4(),
            sealed_secret: "v1.00000000.BBBB".into(),
            previous_valid_until: at(86_400_000),
            rotated_at: at(13),
        }
        .into(),
        WebhookEndpointDisabled {
            endpoint_id: Uuid::new_v4(),
            automatic: true,
            reason: "failing since 2026-12-01".into(),
            owner: "ann".into(),
            disabled_at: at(14),
        }
        .into(),
        WebhookEndpointEnabled {
            endpoint_id: Uuid::new_v4(),
            enabled_at: at(15),
        }
        .into(),
        WebhookEndpointDeleted {
            endpoint_id: Uuid::new_v4(),
            deleted_at: at(16),
        }
        .into(),
        WebhookMessageFailed {
            endpoint_id: Uuid::new_v4(),
            message_id: "msg_0123".into(),
            event_id: Uuid::new_v4(),
            event_type: "message.sent".into(),
            attempts: 9,
            last_error: "HTTP 503".into(),
            owner: "ann".into(),
            failed_at: at(17),
        }
        .into(),
        WebhookRedeliveryRequested {
            endpoint_id: Uuid::new_v4(),
            message_id: None,
            since: Some(at(1_000)),
            until: None,
            requested_by: "ann".into(),
            requested_at: at(18),
        }
        .into(),
        NotificationsRead {
            inbox_id: Uuid::new_v4(),
            tenant_id: "acme".into(),
            user_id: "ann".into(),
            notification_ids: vec![Uuid::new_v4().to_string()],
            read_at: at(20),
        }
        .into(),
        SubjectErased {
            subject_id: Uuid::new_v4(),
            tenant_id: "acme".into(),
            subject: "user:ann".into(),
            conversation_ids: vec![Uuid::new_v4().to_string()],
            keys_erased: 1,
            reason: "request 42".into(),
            erased_by: "root".into(),
            erased_at: at(21),
        }
        .into(),
        WebhookRedeliveryRequested {
            endpoint_id: Uuid::new_v4(),
            message_id: Some("msg_0123".into()),
            since: None,
            until: Some(at(2_000)),
            requested_by: "ann".into(),
            requested_at: at(19),
        }
        .into(),
        // As Kafka carries it with data protection on: placeholders and the box.
        MessageSent {
            conversation_id,
            message_id: Uuid::new_v4(),
            role: Role::User,
            content: schemas::personal::SEALED.into(),
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
            sent_at: at(22),
            reply_to: None,
            latency_ms: None,
            sources: Vec::new(),
            sealed: Some(SealedBox {
                key: format!("conversation:{conversation_id}"),
                generation: 2,
                sealed: "bm9uY2UgY2lwaGVydGV4dCB0YWc=".into(),
            }),
        }
        .into(),
    ]
}

#[test]
fn every_event_round_trips_through_the_wire_format() {
    let mut seen = HashSet::new();
    for event in samples() {
        seen.insert(event.event_type());
        let bytes = event.encode().expect("encode");
        assert_eq!(bytes[0], 0, "magic byte");
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        assert_eq!(id, registry::latest(event.event_type()).id.0);
        let back = Event::decode(&bytes).expect("decode");
        assert_eq!(back, event);
    }
    assert_eq!(
        seen.len(),
        EventType::ALL.len(),
        "a sample for every event type"
    );
}

/// The command side skips encoding an event whose size bound is within the limit: the
/// bound must hold for every event type, and for the shapes where Avro comes closest to
/// JSON (many floats with short strings, integers at their extremes, empty fields).
#[test]
fn every_event_encodes_within_its_size_bound() {
    let conversation_id = Uuid::new_v4();
    let floats: Event = MessageSent {
        sealed: None,
        conversation_id,
        message_id: Uuid::new_v4(),
        role: Role::Assistant,
        content: "x".into(),
        model: Some(String::new()),
        prompt_tokens: Some(i32::MIN),
        completion_tokens: Some(i32::MAX),
        sent_at: Utc.timestamp_millis_opt(0).single().expect("a time"),
        reply_to: Some(Uuid::new_v4()),
        latency_ms: Some(i64::MAX),
        sources: (0..20)
            .map(|n| MessageSource {
                kind: String::new(),
                id: Uuid::new_v4(),
                title: String::new(),
                score: if n % 2 == 0 { 0.0 } else { f32::MIN_POSITIVE },
            })
            .collect(),
    }
    .into();
    for event in samples().into_iter().chain([floats]) {
        let encoded = event.encode().expect("encode").len();
        let bound = event.encoded_len_bound();
        assert!(
            encoded <= bound,
            "{}: {encoded} bytes encoded, bound {bound}",
            event.event_type()
        );
    }
}

#[test]
fn the_event_store_json_payload_round_trips() {
    for event in samples() {
        let json = serde_json::to_value(&event).expect("to json");
        assert!(json.get(event.event_type().as_str()).is_some(), "{json}");
        let back: Event = serde_json::from_value(json).expect("from json");
        assert_eq!(back, event);
    }
}

#[test]
fn malformed_records_are_errors_not_panics() {
    // (Not an event whose last field is a nullable union: apache-avro reads a datum cut
    // just before such a field's branch byte as null, by design.)
    let good = samples()
        .into_iter()
        .find(|e| e.event_type() == EventType::NotificationsRead)
        .expect("a sample")
        .encode()
        .expect("encode");
    assert!(matches!(Event::decode(&[]), Err(CodecError::TooShort(0))));
    let mut bad_magic = good.clone();
    bad_magic[0] = 1;
    assert!(matches!(
        Event::decode(&bad_magic),
        Err(CodecError::BadMagic(1))
    ));
    let mut unknown = good.clone();
    unknown[1..5].copy_from_slice(&9999u32.to_be_bytes());
    assert!(matches!(
        Event::decode(&unknown),
        Err(CodecError::UnknownSchemaId(SchemaId(9999)))
    ));
    for cut in 5..good.len() {
        assert!(Event::decode(&good[..cut]).is_err(), "truncated at {cut}");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(Event::decode(&trailing).is_err());
    assert!(matches!(
        decode::<ConversationEnded>(&good),
        Err(CodecError::WrongEventType { .. })
    ));
}

fn avro_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("avro")
}

#[test]
fn the_schema_table_matches_the_files() {
    let mut ids = HashSet::new();
    let mut files = HashSet::new();
    for row in TABLE {
        assert!(ids.insert(row.id), "schema id {} used twice", row.id);
        assert!(files.insert(row.file), "{} listed twice", row.file);
        let schema = Schema::parse_str(row.source).expect("parses");
        let name = match &schema {
            Schema::Record(r) => r.name.clone(),
            other => panic!("{} is not a record: {other:?}", row.file),
        };
        assert_eq!(name.name(), row.event_type.as_str(), "{}", row.file);
        assert!(
            name.namespace()
                .is_some_and(|n| n.starts_with("io.threadline.events.")),
            "{} needs a namespace under io.threadline.events",
            row.file
        );
        assert!(
            row.source.contains("\"doc\""),
            "{} needs doc strings",
            row.file
        );
    }
    for event_type in EventType::ALL {
        let versions: Vec<u16> = registry::versions(event_type)
            .iter()
            .map(|r| r.version)
            .collect();
        let expected: Vec<u16> = (1..=versions.len() as u16).collect();
        assert_eq!(versions, expected, "{event_type}: versions must be 1..=N");
    }
    // Every file on disk is in the table: an unregistered schema could never be decoded.
    for dir in std::fs::read_dir(avro_dir()).expect("schemas/avro") {
        let dir = dir.expect("entry").path();
        for file in std::fs::read_dir(&dir).expect("event dir") {
            let file = file.expect("entry").path();
            let rel = file
                .strip_prefix(avro_dir())
                .expect("under avro")
                .to_string_lossy()
                .into_owned();
            assert!(
                files.contains(rel.as_str()),
                "{rel} is not in registry::TABLE"
            );
        }
    }
}

/// Consumers built on an earlier version keep reading what producers write now: a new
/// version only adds fields with defaults.
#[test]
fn every_earlier_schema_reads_what_the_latest_writes() {
    for event_type in EventType::ALL {
        let writer = Schema::parse_str(registry::latest(event_type).source).expect("parses");
        for row in registry::versions(event_type) {
            let reader = Schema::parse_str(row.source).expect("parses");
            if let Err(e) = SchemaCompatibility::can_read(&writer, &reader) {
                panic!(
                    "{event_type}: {} (id {}) cannot read the latest version: {e}",
                    row.file, row.id
                );
            }
        }
    }
}

#[test]
fn the_latest_schema_reads_every_earlier_version() {
    for event_type in EventType::ALL {
        let reader = Schema::parse_str(registry::latest(event_type).source).expect("parses");
        for row in registry::versions(event_type) {
            let writer = Schema::parse_str(row.source).expect("parses");
            if let Err(e) = SchemaCompatibility::can_read(&writer, &reader) {
                panic!(
                    "{event_type}: latest schema cannot read {} (id {}): {e}",
                    row.file, row.id
                );
            }
        }
    }
}

fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git must be installed to check the schema history");
    assert!(
        out.status.success(),
        "git {args:?} failed (the schema history check needs a git clone): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("git prints UTF-8")
}

/// Published schema files are immutable: every version ever committed is still in the
/// tree, byte for byte, so it is in the table and checked by the test above. Editing or
/// deleting a committed schema fails here.
#[test]
fn every_committed_schema_is_unchanged_and_still_present() {
    let top = git_in(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["rev-parse", "--show-toplevel"],
    );
    let top = Path::new(top.trim());
    let git = |args: &[&str]| git_in(top, args);
    let has_history = Command::new("git")
        .args(["rev-parse", "--verify", "--quiet", "HEAD"])
        .current_dir(top)
        .status()
        .is_ok_and(|s| s.success());
    if !has_history {
        // A repository before its first commit has published nothing yet.
        return;
    }
    let mut checked = HashSet::new();
    for commit in git(&["log", "--format=%H", "--", "schemas/avro"]).lines() {
        let paths = git(&["ls-tree", "-r", "--name-only", commit, "--", "schemas/avro"]);
        for path in paths.lines().filter(|p| p.ends_with(".avsc")) {
            let committed = git(&["show", &format!("{commit}:{path}")]);
            let current = std::fs::read_to_string(top.join(path)).unwrap_or_else(|_| {
                panic!("{path}, committed in {commit}, was deleted: published schemas stay")
            });
            assert_eq!(
                current, committed,
                "{path} differs from its version in {commit}: add a new vN.avsc instead of editing"
            );
            checked.insert(path.to_owned());
        }
    }
    assert!(
        !checked.is_empty(),
        "no committed schema file was found under schemas/avro"
    );
}

#[test]
fn a_version_1_conversation_started_reads_as_started_by_nobody() {
    // A v1 datum, written with the v1 schema and framed with its id (1).
    let v1 = registry::versions(EventType::ConversationStarted)[0];
    assert_eq!(v1.version, 1);
    let schema = Schema::parse_str(v1.source).unwrap();
    let mut record = apache_avro::types::Record::new(&schema).unwrap();
    record.put("conversation_id", Uuid::new_v4().to_string());
    record.put("tenant_id", "acme");
    record.put("title", "Before owners");
    record.put(
        "metadata",
        apache_avro::types::Value::Map(Default::default()),
    );
    record.put(
        "started_at",
        apache_avro::types::Value::TimestampMillis(1_700_000_000_000),
    );
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .unwrap()
        .write_value_to_vec(record)
        .unwrap();
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&v1.id.0.to_be_bytes());
    bytes.extend_from_slice(&datum);
    let decoded: ConversationStarted = decode(&bytes).unwrap();
    assert_eq!(decoded.title, "Before owners");
    assert_eq!(decoded.started_by, None);
}

/// The table of personal fields names fields the events have, and an event whose
/// personal fields are all erased (each its blank) still reads as the contract's event:
/// readers get `[erased]`, never an error.
#[test]
fn every_personal_field_exists_and_reads_back_erased() {
    let mut covered = HashSet::new();
    for event in samples() {
        let kind = event.event_type();
        let Some(personal) = kind.personal() else {
            continue;
        };
        covered.insert(kind);
        let mut payload = serde_json::to_value(&event).expect("serialises");
        let inner = payload
            .get_mut(kind.as_str())
            .and_then(|v| v.as_object_mut())
            .expect("externally tagged by event type");
        for (field, blank) in personal.fields {
            assert!(
                inner.contains_key(*field),
                "{} has no {field}",
                kind.as_str()
            );
            inner.insert((*field).to_owned(), blank.value());
        }
        let erased: Event = serde_json::from_value(payload.clone())
            .unwrap_or_else(|e| panic!("{} erased does not read: {e}: {payload}", kind.as_str()));
        assert_eq!(erased.event_type(), kind);
        if personal.sealed_by == schemas::personal::SealedBy::Conversation {
            assert!(
                inner_has(&payload, kind, "conversation_id"),
                "{}",
                kind.as_str()
            );
        }
    }
    let with_personal = EventType::ALL
        .into_iter()
        .filter(|t| t.personal().is_some())
        .count();
    assert_eq!(covered.len(), with_personal, "a sample of each");
}

fn inner_has(payload: &serde_json::Value, kind: EventType, field: &str) -> bool {
    payload[kind.as_str()].get(field).is_some()
}

/// The fields naming a person who acted are strings in every event that has them, and
/// none of them is sealed (a pseudonym replaces the id in place).
#[test]
fn every_actor_field_is_a_string_outside_the_sealed_fields() {
    let mut covered = HashSet::new();
    for event in samples() {
        let kind = event.event_type();
        let payload = serde_json::to_value(&event).expect("serialises");
        let sealed: Vec<&str> = kind
            .personal()
            .map(|p| p.fields.iter().map(|(f, _)| *f).collect())
            .unwrap_or_default();
        for field in kind.actors() {
            covered.insert(kind);
            assert!(
                payload[kind.as_str()][*field].is_string(),
                "{}.{field} is not a string",
                kind.as_str()
            );
            assert!(
                !sealed.contains(field),
                "{}.{field} is sealed",
                kind.as_str()
            );
        }
    }
    let with_actors = EventType::ALL
        .into_iter()
        .filter(|t| !t.actors().is_empty())
        .count();
    assert_eq!(covered.len(), with_actors, "a sample of each");
}
