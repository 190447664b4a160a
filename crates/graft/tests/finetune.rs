//! The fine-tuning engine on the real model: configs, gradient reachability for every adapter
//! kind, learning on real text, checkpoints that survive damage.

mod common;

use candle_core::{DType, Device, Tensor};
use graft::config::{AdapterKind, ModelInit, TrainConfig};
use graft::recipes::{finetune, parts};
use graft::train::checkpoint::{self, LoopState};
use std::path::Path;

fn small_config(dir: &Path, kind: AdapterKind) -> TrainConfig {
    let mut cfg = TrainConfig::default();
    cfg.adapter.kind = kind;
    cfg.adapter.r = 4;
    cfg.adapter.targets = vec!["q_proj".into(), "v_proj".into()];
    cfg.data.train = common::licence_jsonl(dir);
    cfg.data.seq_len = 32;
    cfg.data.eval_fraction = 0.2;
    cfg.train.batch_size = 2;
    cfg.train.max_steps = Some(4);
    cfg.train.eval_batches = 2;
    cfg.train.lr = 1e-3;
    cfg.output.dir = dir.join("run");
    cfg
}

/// One sentence of licence text as a one-example batch, every token after the first supervised.
fn licence_sentence_batch(tok: &graft::tokenizer::Tokenizer) -> Vec<graft::data::Batch> {
    let ids: Vec<u32> = tok.encode("Licensed under the Apache License, Version 2.0", false).unwrap();
    let n = ids.len();
    let example = graft::data::Example { ids, supervised: [vec![false], vec![true; n - 1]].concat() };
    graft::data::make_batches(&[example], 1, 64, false, 2, &Device::Cpu).unwrap()
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |body: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, body).unwrap();
        TrainConfig::load(&p, &[]).unwrap_err().to_string()
    };
    assert!(write("[train]\nlearning_rate = 1e-4\n").contains("unknown field `learning_rate`"));
    assert!(write("[data]\ntrain = \"x.jsonl\"\n[train]\nlr = -1.0\n").contains("train.lr"));
    assert!(write("[data]\ntrain = \"x.jsonl\"\n[adapter]\nr = 0\n").contains("adapter.r"));
    assert!(write("[adapter]\nkind = \"prefix\"\n").contains("unknown variant `prefix`"));
    assert!(write("[data]\ntrain = \"x.jsonl\"\n[model]\ninit = \"random\"\n").contains("model.init"));
    assert!(write("[model]\ninit = \"zeros\"\n").contains("unknown variant `zeros`"));
    assert!(write("[train]\nprecision = \"bf16\"\n").contains("unknown variant `bf16`, expected `f32` or `bf16-mixed`"));
    assert!(write("[train]\ncheckpoint_mode = \"layers\"\n")
        .contains("unknown variant `layers`, expected `blocks` or `nested`"));
    // Nothing held out and no eval file: the run would have nothing to evaluate on.
    assert!(write("[data]\ntrain = \"x.jsonl\"\neval_fraction = 0.0\n").contains("data.eval_fraction"));
    assert!(write("[data]\ntrain = \"dataset:tweets/chat.jsonl\"\n").contains("no file `chat.jsonl`"));
    assert!(write("[data]\ntrain = \"dataset:tweets/chat.train.jsonl\"\n").contains("holds `messages` lines"));
    let p = dir.path().join("ok.toml");
    std::fs::write(&p, "[data]\ntrain = \"x.jsonl\"\n").unwrap();
    let cfg = TrainConfig::load(&p, &["train.lr=3e-4".into(), "adapter.kind=none".into()]).unwrap();
    assert_eq!(cfg.train.lr, 3e-4);
    assert_eq!(cfg.adapter.kind, AdapterKind::None);
    assert_eq!(cfg.train.precision, graft::ops::MatmulPrecision::F32);
    assert_eq!(cfg.train.checkpoint_mode, graft::ops::CheckpointMode::Blocks);
    let nested = TrainConfig::load(&p, &["train.checkpoint_mode=nested".into()]).unwrap();
    assert_eq!(nested.train.checkpoint_mode, graft::ops::CheckpointMode::Nested);
    let mixed = TrainConfig::load(&p, &["train.precision=bf16-mixed".into()]).unwrap();
    assert_eq!(mixed.train.precision, graft::ops::MatmulPrecision::Bf16Mixed);
    // A relative data path is relative to the config file; a dataset reference is kept as is.
    assert_eq!(cfg.data.train, dir.path().join("x.jsonl"));
    let with_eval = ["data.eval=\"dataset:tweets/chat.test.jsonl\"".into(), "data.eval_fraction=0.0".into()];
    let cfg = TrainConfig::load(&p, &[with_eval.to_vec(), vec!["data.format=\"messages\"".into()]].concat()).unwrap();
    assert_eq!(cfg.data.eval.as_deref(), Some(Path::new("dataset:tweets/chat.test.jsonl")));
}

#[test]
fn every_trainable_parameter_gets_a_gradient_for_each_adapter_kind() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [
        AdapterKind::Lora,
        AdapterKind::Qlora,
        AdapterKind::Freeze,
        AdapterKind::None,
        AdapterKind::PromptTuning,
        AdapterKind::PrefixTuning,
        AdapterKind::Expanded,
    ] {
        let mut cfg = small_config(dir.path(), kind);
        if kind == AdapterKind::Freeze {
            cfg.adapter.targets = vec!["layers.29.mlp.*".into(), "model.norm.weight".into()];
        }
        if kind == AdapterKind::Expanded {
            cfg.model.expand_blocks = Some(2);
        }
        let tm = parts::build_model(&cfg).unwrap();
        let batch = licence_sentence_batch(&tm.tokenizer);
        let loss = parts::causal_lm_loss(&tm.model, &batch[0]).unwrap();
        let grads = loss.sum.backward().unwrap();
        assert!(!tm.vars.is_empty());
        for (name, v) in &tm.vars {
            let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{kind:?}: no gradient for {name}"));
            let s = g.abs().unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            // LoRA's A gets no gradient at step 0 because B starts at zero (PEFT's init): its
            // gradient exists and is exactly zero; everything else must be non-zero.
            let lora_a_at_init = name.ends_with("lora_A");
            // Likewise a new block of block expansion: its zeroed o_proj / down_proj get gradients,
            // the rest of the block is behind them.
            let behind_zeroed =
                kind == AdapterKind::Expanded && !(name.contains("o_proj") || name.contains("down_proj"));
            let may_be_zero = lora_a_at_init || behind_zeroed;
            assert!(s.is_finite() && (s > 0.0 || may_be_zero), "{kind:?}: {name} gradient sum {s}");
            if behind_zeroed {
                assert_eq!(s, 0.0, "{name}: the new block is an identity at step 0");
            }
        }
        let expected = match kind {
            AdapterKind::Lora | AdapterKind::Qlora => 2 * 2 * 30,
            AdapterKind::Freeze => 4,
            AdapterKind::None => 272,
            AdapterKind::PromptTuning | AdapterKind::PrefixTuning => 1,
            AdapterKind::Expanded => 2 * 9,
        };
        assert_eq!(tm.vars.len(), expected, "{kind:?}");
    }
}

#[test]
fn lora_learns_real_text_and_qlora_tracks_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut curves = Vec::new();
    for kind in [AdapterKind::Lora, AdapterKind::Qlora] {
        let mut cfg = small_config(dir.path(), kind);
        cfg.train.max_steps = Some(12);
        cfg.output.dir = dir.path().join(format!("{kind:?}"));
        let summary = finetune::run(&cfg, false, &mut |_| {}).unwrap();
        assert!(
            summary.final_eval_loss < summary.base_eval_loss - 0.05,
            "{kind:?}: held-out loss {} -> {}",
            summary.base_eval_loss,
            summary.final_eval_loss
        );
        let metrics = std::fs::read_to_string(cfg.output.dir.join("metrics.jsonl")).unwrap();
        let losses: Vec<f64> = metrics
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
            .collect();
        assert_eq!(losses.len(), 12);
        assert!(cfg.output.dir.join("adapter/adapter_model.safetensors").is_file());
        assert!(cfg.output.dir.join("summary.json").is_file());
        curves.push(losses);
    }
    // The QLoRA base holds the same dequantized values the LoRA base was built from.
    for (a, b) in curves[0].iter().zip(&curves[1]) {
        assert!((a - b).abs() <= 1e-3 * a.abs(), "LoRA {a} vs QLoRA {b}");
    }
}

/// LoRA trains Gemma 3 (q/k norms, sliding-window layers, GELU MLP, 262k-token head) like a
/// Llama: three steps on licence text lower the held-out loss.
#[test]
fn lora_on_gemma3_lowers_the_held_out_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path(), AdapterKind::Lora);
    cfg.model.name = "gemma3-270m".into();
    cfg.adapter.targets = vec!["q_proj".into(), "k_proj".into(), "v_proj".into(), "o_proj".into()];
    cfg.train.max_steps = Some(3);
    cfg.train.lr = 5e-3;
    let summary = finetune::run(&cfg, false, &mut |_| {}).unwrap();
    eprintln!("Gemma 3 LoRA: held-out loss {} -> {}", summary.base_eval_loss, summary.final_eval_loss);
    assert!(summary.base_eval_loss.is_finite() && summary.base_eval_loss < 6.0, "{}", summary.base_eval_loss);
    assert!(
        summary.final_eval_loss < summary.base_eval_loss - 0.01,
        "held-out loss {} -> {}",
        summary.base_eval_loss,
        summary.final_eval_loss
    );
    assert!(cfg.output.dir.join("adapter/adapter_model.safetensors").is_file());
}

/// The loop state of a run `step` steps in (one micro-batch per step).
fn state_at(step: u64) -> LoopState {
    LoopState { step, micro_batches_done: step, ..LoopState::start(String::new()) }
}

#[test]
fn damaged_newest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let w = |v: f32| vec![("w".to_string(), Tensor::new(&[v, v], &Device::Cpu).unwrap())];
    checkpoint::save(dir.path(), &w(1.0), &w(0.1), &state_at(1), 2).unwrap();
    let newest = checkpoint::save(dir.path(), &w(2.0), &w(0.2), &state_at(2), 2).unwrap();
    // Truncate the newest weights file: its checksum no longer matches.
    let f = newest.join("weights.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(len / 2).unwrap();
    let mut warnings = Vec::new();
    let c = checkpoint::load_latest(dir.path(), &Device::Cpu, |m| warnings.push(m)).unwrap().unwrap();
    assert_eq!(c.state.step, 1);
    assert!(warnings.iter().any(|m| m.contains("checksum mismatch")), "{warnings:?}");
    // A half-written checkpoint folder (no manifest, `.tmp`) is ignored.
    std::fs::create_dir_all(dir.path().join("checkpoints/step-00000009.tmp")).unwrap();
    assert_eq!(checkpoint::load_latest(dir.path(), &Device::Cpu, |_| {}).unwrap().unwrap().state.step, 1);
    // The strict check names the damaged one.
    let err = checkpoint::verify_all(dir.path()).unwrap_err();
    assert!(
        matches!(err, graft::GraftError::Checkpoint { .. }) && err.to_string().contains("checksum mismatch"),
        "{err}"
    );
}

/// Regression: pruning kept the newest `keep` folders by name, so folders of later steps left by
/// a killed run (renamed in, `LATEST` not yet moved) could get the one just written deleted.
#[test]
fn saving_keeps_the_latest_checkpoint_and_clears_staging() {
    let dir = tempfile::tempdir().unwrap();
    let w = vec![("w".to_string(), Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap())];
    for step in [8, 9] {
        checkpoint::save(dir.path(), &w, &w, &state_at(step), 2).unwrap();
    }
    let root = dir.path().join("checkpoints");
    std::fs::create_dir_all(root.join("step-00000007.tmp")).unwrap();
    let current = checkpoint::save(dir.path(), &w, &w, &state_at(3), 2).unwrap();
    assert!(current.join("manifest.json").is_file(), "the checkpoint LATEST names was pruned");
    assert_eq!(std::fs::read_to_string(root.join("LATEST")).unwrap(), "step-00000003");
    let mut names: Vec<String> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["LATEST", "step-00000003", "step-00000009"], "staging cleared, newest other kept");
    let steps: Vec<u64> = checkpoint::verify_all(dir.path()).unwrap().into_iter().map(|(_, s)| s).collect();
    assert_eq!(steps, [3, 9]);
}

/// Regression: a run killed after its final checkpoint but before its adapter was written saved
/// that step again on resume, deleting the folder `LATEST` names before moving the copy in (a
/// kill in between left `LATEST` naming nothing). It now keeps the checkpoint as it is.
#[test]
fn resuming_a_finished_checkpoint_does_not_rewrite_it() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(dir.path(), AdapterKind::Lora);
    cfg.train.max_steps = Some(1);
    finetune::run(&cfg, false, &mut |_| {}).unwrap();
    let out = &cfg.output.dir;
    let adapter = std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap();
    let last = out.join("checkpoints/step-00000001");
    let inode = std::fs::metadata(&last).unwrap().ino();
    std::fs::remove_dir_all(out.join("adapter")).unwrap();
    std::fs::remove_file(out.join("summary.json")).unwrap();

    finetune::run(&cfg, true, &mut |_| {}).unwrap();
    assert_eq!(std::fs::metadata(&last).unwrap().ino(), inode, "the final checkpoint was written again");
    assert_eq!(std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap(), adapter);
}

#[test]
fn a_run_directory_in_use_is_refused_and_config_changes_block_resume() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(dir.path(), AdapterKind::Lora);
    std::fs::create_dir_all(&cfg.output.dir).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cfg.output.dir.join(".lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let err = finetune::run(&cfg, false, &mut |_| {}).unwrap_err();
    assert!(matches!(err, graft::GraftError::RunDirLocked { .. }), "{err:?}");
    assert!(err.to_string().contains("in use by another graft run"), "{err}");
    drop(lock);

    let mut short = cfg.clone();
    short.train.max_steps = Some(1);
    finetune::run(&short, false, &mut |_| {}).unwrap();
    let resolved = cfg.output.dir.join("config.resolved.toml");
    let accepted = std::fs::read_to_string(&resolved).unwrap();
    let mut changed = short.clone();
    changed.train.lr = 5e-4;
    let err = finetune::run(&changed, true, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("train.lr"), "{err}");
    assert_eq!(std::fs::read_to_string(&resolved).unwrap(), accepted, "a refused resume rewrote the run's config");
}

/// `model.init = "random"` keeps the architecture and tokenizer but not the weights: the
/// pretrained model predicts real text far better than the same shapes drawn at random (whose
/// loss sits near ln(vocab) ≈ 10.8 nats).
#[test]
fn random_init_starts_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let mut losses = Vec::new();
    for init in [ModelInit::Pretrained, ModelInit::Random] {
        let mut cfg = small_config(dir.path(), AdapterKind::None);
        cfg.model.init = init;
        let tm = parts::build_model(&cfg).unwrap();
        let batch = licence_sentence_batch(&tm.tokenizer);
        losses.push(parts::eval_loss(&tm.model, &batch).unwrap());
    }
    assert!(losses[0] < 6.0 && losses[1] > 9.0, "pretrained {} vs random {}", losses[0], losses[1]);
}

/// Regression: QLoRA over a model without quantized weights (a Hugging Face folder) silently
/// trained plain LoRA over dense weights; it is refused, naming the setting and the fix.
#[test]
fn qlora_needs_a_quantized_base() {
    use graft::models::llama::random::{small_config as toy, RandomWeights};
    use graft::models::llama::{Llama, LoadOptions};
    let dir = tempfile::tempdir().unwrap();
    let gguf = graft::io::gguf::GgufFile::open(common::default_gguf()).unwrap();
    let tok = graft::tokenizer::Tokenizer::from_gguf(&gguf).unwrap();
    let model = Llama::load(toy(), &RandomWeights::new(toy(), 3), &LoadOptions::default()).unwrap();
    let folder = dir.path().join("toy");
    graft::io::hf_folder::write_llama_folder(&model, &tok, &folder, DType::F32).unwrap();
    let mut cfg = small_config(dir.path(), AdapterKind::Qlora);
    cfg.model.name = folder.display().to_string();
    let err = parts::build_model(&cfg).err().expect("QLoRA over dense weights is refused").to_string();
    assert!(err.contains("adapter.kind = \"qlora\"") && err.contains("no quantized projections"), "{err}");
    cfg.adapter.kind = AdapterKind::Lora;
    assert!(parts::build_model(&cfg).is_ok());
}
