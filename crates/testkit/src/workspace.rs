//! Facts of the workspace's layout that tests rely on.

use std::path::{Path, PathBuf};

/// The workspace's root directory.
pub fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The projectors: the binaries `projectors/src/bin/*-projector.rs`, by name, sorted
/// (what `dev/stack run` starts, each on its own address).
pub fn projector_binaries() -> Vec<String> {
    let dir = root().join("projectors/src/bin");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs")
                .filter(|n| n.ends_with("-projector"))
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}
