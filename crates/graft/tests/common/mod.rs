//! Shared helpers for integration tests: where the golden files and the default model are.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository's copy of the reference values computed with transformers/peft.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

/// Reads a golden JSON file.
pub fn golden_json(name: &str) -> serde_json::Value {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Reads a golden JSONL file, one value per line.
pub fn golden_jsonl(name: &str) -> Vec<serde_json::Value> {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The default model's GGUF file, fetched into the cache if needed.
pub fn default_gguf() -> PathBuf {
    match graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).expect("default model") {
        graft::assets::ModelSource::Gguf(p) => p,
        other => panic!("default model resolved to {other:?}"),
    }
}
