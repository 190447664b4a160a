//! `graft data build austen` and `austen-dialogue`: the folder build is the file a
//! `dataset:NAME/FILE` reference reads, and `graft train` takes it (`text` passages, `messages`
//! turns; one step on a small decoder).

mod common;

use common::graft;
use std::path::PathBuf;

/// Builds `dataset` into a folder with `graft data build` and checks that every file is the
/// one its `dataset:NAME/FILE` reference reads, with the line count the report gives.
fn build_matches_the_cache(dataset: &str, dir: &std::path::Path) -> PathBuf {
    let out = dir.join(dataset);
    let run = graft(&["data", "build", dataset, "--out", out.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    for file in graft::data::source::built_dataset(dataset).unwrap().files {
        let reference = PathBuf::from(format!("dataset:{dataset}/{}", file.name));
        let cached = graft::recipes::data_build::resolve(&reference, &mut |_| {}).unwrap();
        let built = std::fs::read_to_string(out.join(file.name)).unwrap();
        assert!(std::fs::read_to_string(&cached).unwrap() == built, "{} differs from {}", file.name, cached.display());
        assert_eq!(report["files"][file.name].as_u64(), Some(built.lines().count() as u64), "{}", file.name);
    }
    out
}

/// One training step of a LoRA on a small decoder with this `[data]` section; returns the summary.
fn train_one_step(dir: &std::path::Path, data: &str) -> serde_json::Value {
    let model = dir.join("model");
    common::write_small_model(&model);
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\nname = {:?}\n\n[adapter]\nkind = \"lora\"\nr = 4\ntargets = [\"q_proj\", \"v_proj\"]\n\n\
             [data]\n{data}seq_len = 64\n\n[train]\nmax_steps = 1\nbatch_size = 2\neval_batches = 1\n\n\
             [output]\ndir = {:?}\n",
            model.to_str().unwrap(),
            dir.join("run").to_str().unwrap()
        ),
    )
    .unwrap();
    let run = graft(&["train", cfg.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["steps"], 1, "{summary}");
    assert!(summary["final_eval_loss"].as_f64().unwrap().is_finite(), "{summary}");
    summary
}

#[test]
fn austen_builds_into_a_folder_and_trains_as_text() {
    if !common::require_apt_index() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    build_matches_the_cache("austen", dir.path());
    train_one_step(
        dir.path(),
        "train = \"dataset:austen/text.train.jsonl\"\neval = \"dataset:austen/text.test.jsonl\"\nformat = \"text\"\n",
    );
}

#[test]
fn austen_dialogue_builds_into_a_folder_and_trains_as_chat() {
    if !common::require_apt_index() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    build_matches_the_cache("austen-dialogue", dir.path());
    train_one_step(
        dir.path(),
        "train = \"dataset:austen-dialogue/chat.train.jsonl\"\neval = \"dataset:austen-dialogue/chat.test.jsonl\"\n\
         format = \"messages\"\n",
    );
}
