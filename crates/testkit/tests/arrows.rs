//! The arrows between the workspace's crates, as `cargo metadata` reads the manifests:
//! what each crate links (its normal dependencies, followed through the workspace), held
//! against the rules docs/ARCHITECTURE.md writes down. A new dependency that breaks one
//! fails here, naming the path it came by.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Each workspace crate's normal dependencies: workspace crates and external ones apart.
struct Workspace {
    internal: BTreeMap<String, BTreeSet<String>>,
    external: BTreeMap<String, BTreeSet<String>>,
}

impl Workspace {
    fn read() -> Workspace {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let out = Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo metadata");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let metadata: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
        let packages = metadata["packages"].as_array().expect("packages");
        let members: BTreeSet<String> = packages
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        let mut internal = BTreeMap::new();
        let mut external = BTreeMap::new();
        for p in packages {
            let name = p["name"].as_str().expect("a name").to_owned();
            let (mut ours, mut theirs) = (BTreeSet::new(), BTreeSet::new());
            for d in p["dependencies"].as_array().into_iter().flatten() {
                if !d["kind"].is_null() {
                    continue; // dev and build dependencies are no part of what ships
                }
                let dep = d["name"].as_str().expect("a dependency name").to_owned();
                if members.contains(&dep) {
                    ours.insert(dep);
                } else {
                    theirs.insert(dep);
                }
            }
            internal.insert(name.clone(), ours);
            external.insert(name, theirs);
        }
        Workspace { internal, external }
    }

    /// Every crate `from` links, with the path it links it by (workspace crates, and the
    /// external crates they name directly).
    fn links(&self, from: &str) -> BTreeMap<String, Vec<String>> {
        let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut queue = vec![vec![from.to_owned()]];
        while let Some(path) = queue.pop() {
            let at = path.last().expect("a path ends somewhere").clone();
            for dep in self.external.get(&at).into_iter().flatten() {
                found.entry(dep.clone()).or_insert_with(|| {
                    let mut p = path.clone();
                    p.push(dep.clone());
                    p
                });
            }
            for dep in self.internal.get(&at).into_iter().flatten() {
                if found.contains_key(dep) {
                    continue;
                }
                let mut p = path.clone();
                p.push(dep.clone());
                found.insert(dep.clone(), p.clone());
                queue.push(p);
            }
        }
        found
    }

    /// Fails naming the path when `from` links any of `forbidden`.
    fn refuse(&self, from: &str, forbidden: &[&str], why: &str) {
        assert!(self.internal.contains_key(from), "no crate {from}");
        let links = self.links(from);
        for f in forbidden {
            if let Some(path) = links.get(*f) {
                panic!("{from} links {f} ({}): {why}", path.join(" -> "));
            }
        }
    }
}

const SERVICES: &[&str] = &[
    "command-api",
    "query-api",
    "projectors",
    "extractor",
    "threadline",
    "threadline-console",
];
/// Crates that ship nothing: they may link anything.
const TESTS: &[&str] = &["testkit", "e2e"];

#[test]
fn the_arrows_point_one_way() {
    let ws = Workspace::read();
    // Services depend on shared crates, never on each other (the crates of tests aside:
    // e2e drives the services).
    for (name, deps) in ws
        .internal
        .iter()
        .filter(|(n, _)| !TESTS.contains(&n.as_str()))
    {
        for service in SERVICES {
            assert!(
                !deps.contains(*service),
                "{name} depends on the service {service}"
            );
        }
    }
    // Read paths do not link the write side.
    ws.refuse(
        "query-api",
        &[
            "commands",
            "relay",
            "kafka",
            "rdkafka",
            "webhook-delivery",
            "webhooks",
            "pdf-extract",
            "assistant",
            "llm",
        ],
        "the query API reads; it neither executes commands nor publishes",
    );
    // The operators' command line speaks to the APIs and the projectors' health
    // addresses, never to the store or the broker.
    ws.refuse(
        "threadline",
        &["event-store", "commands", "projection", "kafka", "rdkafka"],
        "the command line talks to the APIs",
    );
    // So does the console, for the browser.
    ws.refuse(
        "threadline-console",
        &["event-store", "commands", "projection", "kafka", "rdkafka"],
        "the console talks to the APIs",
    );
    // Untrusted files are parsed in the extractor's process alone.
    for name in ws
        .internal
        .keys()
        .filter(|n| *n != "extractor" && !TESTS.contains(&n.as_str()))
    {
        ws.refuse(
            name,
            &["pdf-extract"],
            "a PDF parser runs only in the extractor",
        );
    }
    // The core crates do no I/O.
    for core in ["access", "schemas", "domain", "sealing", "ops-report"] {
        ws.refuse(
            core,
            &[
                "sqlx", "tokio", "reqwest", "rdkafka", "hyper", "axum", "platform",
            ],
            "core crates do no I/O",
        );
    }
    assert!(
        ws.internal["access"].is_empty() && ws.external["access"].is_empty(),
        "access depends on nothing"
    );
    // Crates that need settings and the retry delay alone take them from the leaf
    // `common`, not from `platform` with its HTTP, auth and telemetry stack.
    for needs_settings_only in [
        "commands",
        "embeddings",
        "kafka",
        "llm",
        "vectors",
        "assistant",
        "notifications",
        "semantic-index",
        "webhook-delivery",
    ] {
        ws.refuse(
            needs_settings_only,
            &["platform", "axum", "jsonwebtoken", "opentelemetry"],
            "settings and backoff come from common",
        );
    }
    assert!(
        ws.internal["common"].is_empty(),
        "common depends on no crate of ours"
    );
    // The vector stores keep points, not events: the outage rule they share with the
    // event store is common's.
    ws.refuse(
        "vectors",
        &["event-store", "commands", "domain"],
        "a vector store is no reader of the event store",
    );
    // A reader of the ledger links neither the command side nor an HTTP client.
    ws.refuse(
        "webhook-ledger",
        &["commands", "domain", "reqwest", "platform"],
        "the ledger is tables and queries",
    );
    // Only the relay and the projector runtime speak Kafka.
    for (name, deps) in &ws.internal {
        if deps.contains("kafka") {
            assert!(
                ["relay", "projector-runtime", "command-api", "projectors"]
                    .contains(&name.as_str())
                    || TESTS.contains(&name.as_str()),
                "{name} depends on kafka"
            );
        }
    }
}
