//! `graft train` of a smaller student (`model.keep_layers`) end to end: LoRA on 15 of the default
//! model's 30 blocks trains two steps, its run records the kept blocks (resolved config,
//! `summary.json`), and it exports as a merged GGUF and a Hugging Face folder of 15 blocks whose
//! read-back checks pass; its adapter is refused on the whole model (`--adapter`) and
//! adapter-only exports are refused (they fit only the student). QLoRA trains over a student's
//! quantized blocks. A fully fine-tuned student of a small 30-block decoder exports with its
//! lineage too.

mod common;

use common::{graft, lora_config};
use graft::io::gguf::GgufFile;
use std::path::Path;
use std::process::Output;

/// Runs graft, fails the test with its stderr unless it succeeds, and parses its `--json` stdout.
fn graft_json(args: &[&str]) -> serde_json::Value {
    let Output { status, stdout, stderr } = graft(args).output().unwrap();
    assert!(status.success(), "graft {args:?} failed:\n{}", String::from_utf8_lossy(&stderr));
    serde_json::from_slice(&stdout).unwrap()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `config.json` of an exported folder: 15 blocks, and the lineage of every second block of 30.
fn assert_student_config(folder: &Path) {
    let config = read_json(&folder.join("config.json"));
    assert_eq!(config["num_hidden_layers"], 15, "{config}");
    assert_eq!(config["graft_student"]["teacher_num_hidden_layers"], 30, "{config}");
    assert_eq!(config["graft_student"]["kept_layers"], serde_json::json!((0..30).step_by(2).collect::<Vec<_>>()));
}

#[test]
fn a_lora_student_trains_records_its_blocks_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = lora_config(dir.path(), "student", "max_steps = 2\nbatch_size = 2\neval_batches = 1");
    let run = dir.path().join("student");
    let summary = graft_json(&["train", cfg.to_str().unwrap(), "--set", "model.keep_layers={ every = 2 }", "--json"]);
    eprintln!("student summary: {summary}");
    assert_eq!(summary["steps"], 2);
    assert!(summary["final_eval_loss"].as_f64().unwrap().is_finite());
    assert_eq!(summary["student"]["teacher_num_hidden_layers"], 30);
    assert_eq!(summary["student"]["kept_layers"].as_array().unwrap().len(), 15);
    assert_eq!(read_json(&run.join("summary.json"))["student"], summary["student"]);
    let resolved = std::fs::read_to_string(run.join("config.resolved.toml")).unwrap();
    assert!(resolved.contains("[model.keep_layers]\nevery = 2\noffset = 0"), "{resolved}");
    // LoRA r 4 on q and v of 15 blocks: 15 × (4·(576+576) + 4·(576+192)).
    assert_eq!(summary["trainable_params"], 15 * (4 * (576 + 576) + 4 * (576 + 192)));

    let run_s = run.to_str().unwrap();
    let gguf = dir.path().join("gguf/student.gguf");
    let r = graft_json(&[
        "export",
        run_s,
        "--format",
        "gguf",
        "--gguf-type",
        "f32",
        "--out",
        gguf.to_str().unwrap(),
        "--json",
    ]);
    eprintln!("gguf export: {r}");
    assert!(r["check"]["max_abs_logit_diff"].as_f64().unwrap() <= r["check"]["tolerance"].as_f64().unwrap());
    assert_eq!(r["check"]["max_abs_weight_diff"], 0.0, "{r}");
    let file = GgufFile::open(&gguf).unwrap();
    assert_eq!(file.meta_u32("llama.block_count").unwrap(), 15);
    assert_eq!(file.meta_u32("graft.student.teacher_block_count").unwrap(), 30);
    assert!(file.has_tensor("blk.14.ffn_down.weight") && !file.has_tensor("blk.15.ffn_down.weight"));

    let merged = dir.path().join("merged");
    let r = graft_json(&["export", run_s, "--format", "merged", "--out", merged.to_str().unwrap(), "--json"]);
    eprintln!("merged export: {r}");
    assert_eq!(r["argmax_agrees"], true, "{r}");
    assert_student_config(&merged);

    // The adapter fits only the student: attached to the whole model it is refused, not run.
    assert!(run.join("adapter/graft_student.json").is_file());
    let out = graft(&["generate", "--adapter", run_s, "--prompt", "Hi", "--max-new-tokens", "1"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("trained on a student of blocks [0, 2,") && err.contains("a whole model"), "{err}");

    for format in ["peft", "gguf-lora"] {
        let out = graft(&["export", run_s, "--format", format, "--out", dir.path().join(format).to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{format}: {err}");
        assert!(err.contains("15 of the 30 blocks") && err.contains("--format merged"), "{format}: {err}");
    }
}

#[test]
fn a_qlora_student_trains_over_its_quantized_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = lora_config(dir.path(), "qlora", "max_steps = 1\nbatch_size = 2\neval_batches = 1");
    let summary = graft_json(&[
        "train",
        cfg.to_str().unwrap(),
        "--set",
        "adapter.kind=\"qlora\"",
        "--set",
        "model.keep_layers=[0, 1, 2, 29]",
        "--json",
    ]);
    assert_eq!(summary["steps"], 1, "{summary}");
    assert!(summary["final_eval_loss"].as_f64().unwrap().is_finite(), "{summary}");
    assert_eq!(summary["student"]["kept_layers"], serde_json::json!([0, 1, 2, 29]));
    assert_eq!(summary["trainable_params"], 4 * (4 * (576 + 576) + 4 * (576 + 192)));
}

#[test]
fn a_fully_trained_student_exports_with_its_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    common::write_model(&model, &graft::models::llama::LlamaConfig { num_hidden_layers: 30, ..common::small_config() });
    let cfg = lora_config(dir.path(), "full", "max_steps = 1\nbatch_size = 2\neval_batches = 1");
    let summary = graft_json(&[
        "train",
        cfg.to_str().unwrap(),
        "--set",
        &format!("model.name={:?}", model.to_str().unwrap()),
        "--set",
        "adapter.kind=\"none\"",
        "--set",
        "model.keep_layers={ every = 2 }",
        "--json",
    ]);
    assert_eq!(summary["steps"], 1, "{summary}");
    let run = dir.path().join("full");
    assert_student_config(&run.join("model"));
    let merged = dir.path().join("merged");
    let r = graft_json(&[
        "export",
        run.to_str().unwrap(),
        "--format",
        "merged",
        "--out",
        merged.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r["max_abs_logit_diff"], 0.0, "{r}");
    assert_student_config(&merged);
}
