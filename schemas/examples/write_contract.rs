//! Writes the contract as data (`contract/schema-ids.json`, `contract/asyncapi.json`) from
//! what `schemas::published` generates, after a change to the events:
//! `cargo run -p schemas --example write_contract`, then review the diff.
//! `tests/published.rs` fails while the committed files differ.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contract");
    for (file, generated) in [
        ("schema-ids.json", schemas::published::schema_ids()),
        ("asyncapi.json", schemas::published::asyncapi()),
    ] {
        let path = dir.join(file);
        let text = serde_json::to_string_pretty(&generated)? + "\n";
        std::fs::write(&path, text)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
