//! `graft data build austen`: the folder build is the file a `dataset:austen/FILE` reference
//! reads, and `graft train` takes it as `text` data (one step on a small decoder).

mod common;

use common::graft;
use std::path::PathBuf;

#[test]
fn austen_builds_into_a_folder_and_trains_as_text() {
    if !common::require_apt_index() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("austen");
    let run = graft(&["data", "build", "austen", "--out", out.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    for file in graft::data::source::built_dataset("austen").unwrap().files {
        let reference = PathBuf::from(format!("dataset:austen/{}", file.name));
        let cached = graft::recipes::data_build::resolve(&reference, &mut |_| {}).unwrap();
        let built = std::fs::read_to_string(out.join(file.name)).unwrap();
        assert!(std::fs::read_to_string(&cached).unwrap() == built, "{} differs from {}", file.name, cached.display());
        assert_eq!(report["files"][file.name].as_u64(), Some(built.lines().count() as u64), "{}", file.name);
    }

    let model = dir.path().join("model");
    common::write_small_model(&model);
    let cfg = dir.path().join("austen.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\nname = {:?}\n\n[adapter]\nkind = \"lora\"\nr = 4\ntargets = [\"q_proj\", \"v_proj\"]\n\n\
             [data]\ntrain = \"dataset:austen/text.train.jsonl\"\neval = \"dataset:austen/text.test.jsonl\"\n\
             format = \"text\"\nseq_len = 64\n\n[train]\nmax_steps = 1\nbatch_size = 2\neval_batches = 1\n\n\
             [output]\ndir = {:?}\n",
            model.to_str().unwrap(),
            dir.path().join("run").to_str().unwrap()
        ),
    )
    .unwrap();
    let run = graft(&["train", cfg.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["steps"], 1, "{summary}");
    assert!(summary["final_eval_loss"].as_f64().unwrap().is_finite(), "{summary}");
}
