//! The contract as data stays what the code says: the committed schema-id table and
//! AsyncAPI document equal what `schemas::published` generates now, and the AsyncAPI
//! document holds together (every reference resolves, every schema id belongs to exactly
//! one message). The test only compares: `cargo run -p schemas --example write_contract`
//! rewrites the files.

use std::collections::HashMap;
use std::path::PathBuf;

use schemas::published::{asyncapi, schema_ids};
use serde_json::Value;

fn check(file: &str, generated: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("contract")
        .join(file);
    let text = serde_json::to_string_pretty(generated).expect("serialisable") + "\n";
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} differs from what the code generates: run cargo run -p schemas --example write_contract, and review the diff",
        path.display()
    );
}

#[test]
fn the_committed_contract_files_are_what_the_code_generates() {
    check("schema-ids.json", &schema_ids());
    check("asyncapi.json", &asyncapi());
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let path = reference.strip_prefix("#/")?;
    path.split('/').try_fold(doc, |node, part| node.get(part))
}

fn refs<'a>(node: &'a Value, out: &mut Vec<&'a str>) {
    match node {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_and_every_schema_id_has_its_message() {
    let doc = asyncapi();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20, "{}", all.len());
    for r in all {
        assert!(resolve(&doc, r).is_some(), "{r} does not resolve");
    }
    let mut owner: HashMap<u64, String> = HashMap::new();
    let messages = doc["components"]["messages"].as_object().expect("messages");
    for (name, m) in messages {
        for id in m["x-schema-ids"].as_array().expect("ids") {
            let id = id.as_u64().expect("an id");
            assert!(
                owner.insert(id, name.clone()).is_none(),
                "schema id {id} in two messages"
            );
        }
        assert_eq!(m["payload"]["schema"]["name"], name.as_str());
    }
    let table = schema_ids();
    let rows = table["schemas"].as_array().expect("rows");
    assert_eq!(rows.len(), owner.len());
    for row in rows {
        let id = row["id"].as_u64().expect("id");
        assert_eq!(
            owner.get(&id).map(String::as_str),
            row["event_type"].as_str(),
            "{row}"
        );
    }
}
