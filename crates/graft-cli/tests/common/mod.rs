//! Shared helpers of the CLI tests: the `graft` binary, real English training text, a LoRA
//! config on the default model, and a small decoder written as a Hugging Face folder, so that
//! whole commands run in CI time on real code paths (the default model's tokenizer and chat
//! template, seeded random weights).
#![allow(dead_code)]

use graft::models::llama::LlamaConfig;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../../graft/tests/common/mod.rs"]
mod shared;
pub use shared::*;

/// The small decoder's shapes: [`small_config`](graft::models::llama::random::small_config)
/// with a context of 512 (the configs' sequence lengths).
pub fn small_config() -> LlamaConfig {
    LlamaConfig { max_position_embeddings: 512, ..graft::models::llama::random::small_config() }
}

/// Writes a decoder of shapes `cfg` (seeded random weights, seed 3) with the default model's
/// tokenizer and chat template as a Hugging Face folder.
pub fn write_model(dir: &Path, cfg: &LlamaConfig) {
    write_model_seeded(dir, cfg, 3);
}

/// Writes the small decoder ([`small_config`]).
pub fn write_small_model(dir: &Path) {
    write_model(dir, &small_config());
}

/// The `graft` binary under test with `args`.
pub fn graft(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_graft"));
    c.args(args);
    c
}

/// Writes `dir/<name>.toml`: LoRA (r 4 on q/v) on the default model over [`licence_jsonl`],
/// with the given `[train]` lines, into the run directory `dir/<name>`.
pub fn lora_config(dir: &Path, name: &str, train: &str) -> PathBuf {
    if !dir.join("licence.jsonl").exists() {
        licence_jsonl(dir);
    }
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[adapter]\nkind = \"lora\"\nr = 4\ndropout = 0.1\ntargets = [\"q_proj\", \"v_proj\"]\n\n[data]\ntrain = \"licence.jsonl\"\nseq_len = 24\n\n\
             [train]\n{train}\n\n[output]\ndir = \"{}\"\n",
            dir.join(name).display()
        ),
    )
    .unwrap();
    cfg
}
