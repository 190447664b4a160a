//! Stages: a run that starts from a finished earlier run (`model.from_run`, merging or keeping
//! its LoRA adapter), replay of general text, and the errors for what cannot start.

mod common;

use graft::config::{FromRunAdapter, ReplaySection, TrainConfig};
use graft::models::llama::random::small_config;
use graft::recipes::{finetune, parts};
use graft::train::Event;
use std::path::Path;

/// LoRA on a small seeded decoder over the licence text, 3 steps at a high rate (so the
/// adapter moves away from its zero start).
fn config(dir: &Path, run: &str) -> TrainConfig {
    let model = dir.join("small");
    if !model.exists() {
        common::write_model_seeded(&model, &small_config(), 3);
    }
    let mut cfg = TrainConfig::default();
    cfg.model.name = model.display().to_string();
    cfg.adapter.r = 4;
    cfg.adapter.targets = vec!["q_proj".into(), "v_proj".into()];
    cfg.data.train = common::licence_jsonl(dir);
    cfg.data.seq_len = 32;
    cfg.data.eval_fraction = 0.2;
    cfg.train.batch_size = 2;
    cfg.train.max_steps = Some(3);
    cfg.train.eval_batches = 1;
    cfg.train.lr = 1e-2;
    cfg.output.dir = dir.join(run);
    cfg
}

const IDS: [u32; 6] = [1, 42, 7, 300, 12, 99];

#[test]
fn a_second_stage_starts_from_the_first_runs_merged_model_or_keeps_its_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let first = config(dir.path(), "first");
    let (_, trained) = finetune::run_keeping_model(&first, false, &mut |_| {}).unwrap();
    let want = common::forward_logits(&trained, &IDS, false);

    // Merge: the earlier adapter folded into the base, a fresh adapter (B = 0) on top.
    let mut merged = config(dir.path(), "second");
    merged.model.from_run = Some(first.output.dir.clone());
    let tm = parts::build_model(&merged).unwrap();
    let got = common::forward_logits(&tm.model, &IDS, false);
    let diff = common::max_abs_diff(&got, &want);
    assert!(diff < 1e-4, "merged start differs from the first run's model by {diff}");
    let base = parts::build_model(&config(dir.path(), "plain")).unwrap();
    let moved = common::max_abs_diff(&common::forward_logits(&base.model, &IDS, false), &want);
    assert!(moved > 1e-3, "the first run changed the model ({moved})");

    // Keep: the earlier adapter's own values continue training.
    let mut keep = merged.clone();
    keep.model.from_run_adapter = FromRunAdapter::Keep;
    let tm = parts::build_model(&keep).unwrap();
    let file = first.output.dir.join("adapter/adapter_model.safetensors");
    let saved = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let kept = tm.lora.as_ref().unwrap().named_vars();
    assert_eq!(kept.len(), saved.len());
    for (name, v) in &kept {
        let same = |t: &candle_core::Tensor| t.dims() == v.dims() && common::max_abs_diff(t, v.as_tensor()) == 0.0;
        assert!(saved.values().any(same), "{name} is not one of the saved adapter's tensors");
    }
    let diff = common::max_abs_diff(&common::forward_logits(&tm.model, &IDS, false), &want);
    assert!(diff < 1e-4, "kept adapter gives other logits ({diff})");
    // …and the second stage trains it.
    let (summary, _) = finetune::run_keeping_model(&keep, false, &mut |_| {}).unwrap();
    assert_eq!(summary.steps, 3);
}

#[test]
fn an_unfinished_run_or_an_empty_corpus_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "second");
    let earlier = dir.path().join("earlier");
    std::fs::create_dir_all(&earlier).unwrap();
    cfg.model.from_run = Some(earlier.clone());
    let err = parts::build_model(&cfg).err().unwrap().to_string();
    assert!(err.contains("not a finished run") && err.contains("config.resolved.toml"), "{err}");
    std::fs::write(earlier.join("config.resolved.toml"), toml::to_string(&config(dir.path(), "x")).unwrap()).unwrap();
    let err = parts::build_model(&cfg).err().unwrap().to_string();
    assert!(err.contains("summary.json"), "{err}");
    std::fs::write(earlier.join("summary.json"), "{}").unwrap();
    let err = parts::build_model(&cfg).err().unwrap().to_string();
    assert!(err.contains("adapter/adapter_model.safetensors"), "{err}");

    let mut empty = config(dir.path(), "empty");
    empty.data.train = dir.path().join("empty.jsonl");
    std::fs::write(&empty.data.train, "").unwrap();
    let err = finetune::run(&empty, false, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn replay_joins_its_share_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let replay_file = dir.path().join("general.jsonl");
    let lines: Vec<String> = (0..50)
        .map(|i| serde_json::json!({"text": format!("General sentence number {i} about the weather.")}).to_string())
        .collect();
    std::fs::write(&replay_file, lines.join("\n") + "\n").unwrap();
    let mut cfg = config(dir.path(), "whole");
    cfg.data.replay = Some(ReplaySection { path: replay_file, share: 0.25, format: graft::data::DataFormat::Text });
    cfg.train.max_steps = Some(4);
    cfg.train.save_every = 2;
    let mut notes = Vec::new();
    finetune::run(&cfg, false, &mut |e| {
        if let Event::Note(n) = e {
            notes.push(n)
        }
    })
    .unwrap();
    let note = notes.iter().find(|n| n.starts_with("replay:")).expect("a replay note");
    let (k, n): (usize, usize) = {
        let w: Vec<&str> = note.split_whitespace().collect();
        (w[1].parse().unwrap(), w[3].parse().unwrap())
    };
    assert_eq!(k, graft::data::replay_count(n - k, 0.25), "{note}");
    assert!(k > 0);

    // Killed at step 3 (the checkpoint of step 2 written) and resumed: the same steps as the
    // whole run.
    let mut parts_cfg = cfg.clone();
    parts_cfg.output.dir = dir.path().join("parts");
    common::killed_at(3, |on| finetune::run(&parts_cfg, false, on));
    finetune::run(&parts_cfg, true, &mut |_| {}).unwrap();
    assert_eq!(common::metrics_without_timing(&cfg.output.dir), common::metrics_without_timing(&parts_cfg.output.dir));
}
