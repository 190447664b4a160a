//! Helpers shared by the `graft` binary's tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `graft` binary under test with `args`.
pub fn graft(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_graft"));
    c.args(args);
    c
}

/// `dir/data.jsonl`: real English text (paragraphs of the Apache 2.0 licence, on every Debian
/// system), one `{"text": ...}` sample per paragraph; written once.
pub fn licence_jsonl(dir: &Path) -> PathBuf {
    let data = dir.join("data.jsonl");
    if !data.exists() {
        let text = std::fs::read_to_string("/usr/share/common-licenses/Apache-2.0").expect("Apache-2.0 licence text");
        let lines: String = text
            .split("\n\n")
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| p.len() > 40)
            .map(|p| format!("{}\n", serde_json::json!({ "text": p })))
            .collect();
        std::fs::write(&data, lines).unwrap();
    }
    data
}

/// Writes `dir/<name>.toml`: LoRA (r 4 on q/v) on the default model over [`licence_jsonl`],
/// with the given `[train]` lines, into the run directory `dir/<name>`.
pub fn lora_config(dir: &Path, name: &str, train: &str) -> PathBuf {
    licence_jsonl(dir);
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[adapter]\nkind = \"lora\"\nr = 4\ndropout = 0.1\ntargets = [\"q_proj\", \"v_proj\"]\n\n[data]\ntrain = \"data.jsonl\"\nseq_len = 24\n\n\
             [train]\n{train}\n\n[output]\ndir = \"{}\"\n",
            dir.join(name).display()
        ),
    )
    .unwrap();
    cfg
}
