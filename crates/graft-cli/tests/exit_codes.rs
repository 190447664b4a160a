//! The `graft` binary's exit codes: each kind of failure has its own (documented in
//! docs/errors.md and `graft --help`), so scripts can tell bad input from a diverged run from a
//! run directory in use.

mod common;

use common::{graft, lora_config};
use graft::error::ErrorKind;
use std::process::Output;

/// Runs graft, expecting it to fail with `code`; returns its stderr.
fn fails_with(args: &[&str], code: i32) -> String {
    let Output { status, stdout, stderr } = graft(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    assert_eq!(status.code(), Some(code), "graft {args:?}:\n{}\n{stderr}", String::from_utf8_lossy(&stdout));
    stderr
}

#[test]
fn exit_codes_are_documented_in_help_and_docs() {
    let help = String::from_utf8(graft(&["--help"]).output().unwrap().stdout).unwrap();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md")).unwrap();
    for kind in ErrorKind::ALL {
        let code = kind.exit_code();
        assert!(help.contains(&format!("  {code}  {}", kind.meaning())), "`graft --help` lacks exit code {code}");
        assert!(docs.contains(&format!("| {code} |")), "docs/errors.md lacks exit code {code}");
    }
}

#[test]
fn bad_input_and_bad_usage_have_their_own_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[train]\nlearning_rate = 1e-4\n").unwrap();
    let err = fails_with(&["train", cfg.to_str().unwrap()], 3);
    assert!(err.contains("unknown field `learning_rate`"), "{err}");
    let err = fails_with(&["export", "runs/x", "--format", "onnx", "--out", "x"], 3);
    assert!(err.contains("unknown --format `onnx`"), "{err}");
    fails_with(&["train", cfg.to_str().unwrap(), "--no-such-flag"], 2);

    // A multitask config naming one task twice: refused by `graft multitask` and `graft validate`.
    let twice = dir.path().join("twice.toml");
    let task = "[[tasks]]\nname = \"qa\"\ndata = \"qa.jsonl\"\nformat = \"prompt_completion\"\n";
    std::fs::write(&twice, format!("{task}{task}[multitask]\nmixing = \"equal\"\n")).unwrap();
    for command in ["multitask", "validate"] {
        let err = fails_with(&[command, twice.to_str().unwrap()], 3);
        assert!(err.contains("task `qa` is listed twice"), "{command}: {err}");
    }
}

#[test]
fn a_locked_run_dir_and_missing_checkpoints_have_their_own_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = lora_config(dir.path(), "run", "max_steps = 2\nbatch_size = 1\neval_batches = 1");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(run.join(".lock")).unwrap();
    lock.try_lock().unwrap();
    let err = fails_with(&["train", cfg.to_str().unwrap()], 5);
    assert!(err.contains("in use by another graft run"), "{err}");
    drop(lock);

    let err = fails_with(&["validate", "--checkpoint", run.to_str().unwrap()], 7);
    assert!(err.contains("no complete checkpoint"), "{err}");
}

/// A learning rate of 1e39 (beyond f32's range) turns the LoRA `B` weights infinite in the first
/// step; the second step's loss is NaN and the run stops with the divergence code, naming it.
/// (At 1e30 the run does not diverge: RMSNorm's overflowing square zeroes the activations and
/// the loss settles at ln(vocab).)
#[test]
fn a_diverging_run_exits_with_the_divergence_code() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = lora_config(dir.path(), "run", "max_steps = 3\nbatch_size = 1\nlr = 1e39\neval_batches = 1");
    let err = fails_with(&["train", cfg.to_str().unwrap()], 4);
    assert!(err.contains("step 2: loss is NaN"), "{err}");
    assert!(err.contains("stopping — lower train.lr"), "{err}");
}
