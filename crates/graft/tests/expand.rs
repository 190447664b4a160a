//! Block expansion (`model.expand_blocks`, LLaMA Pro) on the default model: the grown model's
//! logits are the base model's bit for bit (both forward paths, f32); training the new blocks
//! (`adapter.kind = "expanded"`) changes them and nothing else and lowers the loss on real text;
//! the trainable parameter count is N blocks (plus the norms with `expanded_norms`), printed
//! beside LoRA's for docs/multitask.md; the trained model exports as a Hugging Face folder and a
//! GGUF of 30 + N blocks that reload with the in-memory model's logits exactly, and a later stage
//! (`model.from_run`) starts from it; bad settings are input errors naming the key.

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::Tensor;
use graft::assets::ModelSource;
use graft::config::{AdapterKind, TrainConfig};
use graft::io::gguf::GgufFile;
use graft::models::llama::{BlockExpansion, Llama, LoadOptions};
use graft::models::load::{load_causal_lm, load_causal_lm_expanding};
use graft::recipes::export::{export, ExportFormat};
use graft::recipes::export_check::{logits, CHECK_PROMPT};
use graft::recipes::{finetune, parts};
use graft::tokenizer::Tokenizer;
use std::collections::HashMap;
use std::path::Path;

/// Weights of one SmolLM2-135M block: 4 attention and 3 MLP projections, 2 norms.
const BLOCK: usize = 3_540_096;

fn tensors(m: &Llama) -> HashMap<String, Tensor> {
    m.named_tensors().unwrap().into_iter().collect()
}

/// The name in the base model of the grown model's tensor `name` (`sources`: the plan's).
fn base_name(name: &str, sources: &[usize]) -> String {
    match name.strip_prefix("model.layers.").and_then(|r| r.split_once('.')) {
        Some((i, tail)) => format!("model.layers.{}.{tail}", sources[i.parse::<usize>().unwrap()]),
        None => name.to_string(),
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

fn check_ids() -> Vec<u32> {
    Tokenizer::from_gguf(&GgufFile::open(common::default_gguf()).unwrap()).unwrap().encode(CHECK_PROMPT, false).unwrap()
}

#[test]
fn the_grown_model_is_the_base_model_bit_for_bit() {
    let source = ModelSource::Gguf(common::default_gguf());
    let opts = LoadOptions::default();
    let base = load_causal_lm(&source, &opts).unwrap();
    // 4 does not divide 30: new blocks after original blocks 6, 14, 21 and 29.
    let grown = load_causal_lm_expanding(&source, &opts, 4).unwrap();
    let plan = grown.expansion().unwrap().clone();
    assert_eq!(plan, BlockExpansion { base_num_hidden_layers: 30, new_layers: vec![7, 16, 24, 33] });
    assert_eq!((grown.config().num_hidden_layers, grown.layers().len()), (34, 34));

    // Every tensor is the base tensor it copies, except the new blocks' zeroed output projections.
    let (base_w, sources) = (tensors(&base), plan.sources());
    for (name, w) in grown.named_tensors().unwrap() {
        let zeroed = plan.is_new_tensor(&name) && (name.contains("o_proj") || name.contains("down_proj"));
        let diff = match zeroed {
            true => w.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64,
            false => common::max_abs_diff(&w, &base_w[&base_name(&name, &sources)]),
        };
        assert_eq!(diff, 0.0, "{name}");
    }
    drop(base_w);

    // Both forward paths give the base model's logits, bit for bit.
    let ids = check_ids();
    for train in [false, true] {
        let (want, got) = (common::forward_logits(&base, &ids, train), common::forward_logits(&grown, &ids, train));
        assert!(bits(&want) == bits(&got), "train path {train}: the grown model's logits differ");
    }
    assert!(bits(&logits(&base, &ids).unwrap()) == bits(&logits(&grown, &ids).unwrap()));
}

fn expand_config(dir: &Path, n: usize) -> TrainConfig {
    let mut cfg = TrainConfig::default();
    cfg.model.expand_blocks = Some(n);
    cfg.adapter.kind = AdapterKind::Expanded;
    cfg.data.train = common::licence_jsonl(dir);
    // Evaluated on the training text itself: a few steps must lower its loss.
    cfg.data.eval = Some(cfg.data.train.clone());
    cfg.data.seq_len = 32;
    cfg.train.batch_size = 2;
    cfg.train.max_steps = Some(4);
    cfg.train.eval_batches = 2;
    cfg.train.lr = 1e-3;
    cfg.output.dir = dir.join("run");
    cfg
}

#[test]
fn only_the_new_blocks_train_and_the_exports_reload_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = expand_config(dir.path(), 2);
    let (summary, trained) = finetune::run_keeping_model(&cfg, false, &mut |_| {}).unwrap();
    eprintln!(
        "expanded N=2, 4 steps: eval loss {} -> {}, {} trainable",
        summary.base_eval_loss, summary.final_eval_loss, summary.trainable_params
    );
    assert_eq!(summary.trainable_params, 2 * BLOCK);
    assert!(summary.final_eval_loss.is_finite() && summary.final_eval_loss < summary.base_eval_loss - 0.05);
    let plan = summary.expansion.clone().unwrap();
    assert_eq!(plan.new_layers, vec![15, 31]);
    let metrics = std::fs::read_to_string(cfg.output.dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4);

    // The base model's weights are untouched; every tensor of the new blocks moved (after the first
    // step through o_proj / down_proj, then the rest of the block).
    let source = ModelSource::Gguf(common::default_gguf());
    let base_w = tensors(&load_causal_lm(&source, &LoadOptions::default()).unwrap());
    let sources = plan.sources();
    let mut moved = 0;
    for (name, w) in trained.named_tensors().unwrap() {
        let from = &base_w[&base_name(&name, &sources)];
        let zeroed = plan.is_new_tensor(&name) && (name.contains("o_proj") || name.contains("down_proj"));
        let diff = common::max_abs_diff(&w, &if zeroed { from.zeros_like().unwrap() } else { from.clone() });
        if plan.is_new_tensor(&name) {
            assert!(diff > 0.0, "{name} of a new block did not train");
            moved += 1;
        } else {
            assert_eq!(diff, 0.0, "{name} is not a new block's, yet changed");
        }
    }
    assert_eq!(moved, 2 * 9);
    drop(base_w);

    // The run's model/ folder and both exports hold 32 blocks and the in-memory model's logits.
    let ids = check_ids();
    let want = logits(&trained, &ids).unwrap();
    let hf = dir.path().join("merged");
    let report = export(&cfg.output.dir, ExportFormat::Merged, &hf, GgmlDType::F32).unwrap();
    assert_eq!(report.max_abs_logit_diff, 0.0);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 32);
    let gguf = dir.path().join("gguf/expanded.gguf");
    let report = export(&cfg.output.dir, ExportFormat::Gguf, &gguf, GgmlDType::F32).unwrap();
    assert_eq!(report.check.max_abs_weight_diff, Some(0.0));
    let file = GgufFile::open(&gguf).unwrap();
    assert_eq!(file.meta_u32("llama.block_count").unwrap(), 32);
    assert!(file.has_tensor("blk.31.ffn_down.weight") && !file.has_tensor("blk.32.ffn_down.weight"));
    for folder in
        [ModelSource::HfFolder(cfg.output.dir.join("model")), ModelSource::HfFolder(hf), ModelSource::Gguf(gguf)]
    {
        let back = load_causal_lm(&folder, &LoadOptions::default()).unwrap();
        assert_eq!(back.layers().len(), 32);
        assert!(bits(&logits(&back, &ids).unwrap()) == bits(&want), "{folder:?} reloads with other logits");
    }

    // A later stage starts from the grown model (here with LoRA on all of its 32 blocks).
    let mut stage2 = TrainConfig::default();
    stage2.model.from_run = Some(cfg.output.dir.clone());
    let tm = parts::build_model(&stage2).unwrap();
    assert_eq!((tm.model.layers().len(), tm.vars.len()), (32, 32 * 7 * 2));
}

/// Trainable parameters of block expansion against LoRA on every linear layer of the default
/// model, as `graft validate` reports them (the table in docs/multitask.md).
#[test]
fn trainable_parameters_are_the_new_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let count = |cfg: &TrainConfig| -> usize {
        parts::build_model(cfg).unwrap().vars.iter().map(|(_, v)| v.elem_count()).sum()
    };
    // The norms of the 30 original blocks (2 × 576 each) and the final norm.
    let norms = 30 * 2 * 576 + 576;
    for n in [2, 4, 8] {
        let mut cfg = expand_config(dir.path(), n);
        let blocks = count(&cfg);
        cfg.adapter.expanded_norms = true;
        let with_norms = count(&cfg);
        eprintln!("expand_blocks = {n}: {blocks} trainable; with expanded_norms: {with_norms}");
        assert_eq!((blocks, with_norms), (n * BLOCK, n * BLOCK + norms));
    }
    for r in [8, 16] {
        let mut cfg = TrainConfig::default();
        cfg.adapter.r = r;
        let lora = count(&cfg);
        eprintln!("LoRA r = {r} on all 7 linear layers: {lora} trainable");
        // Per block: r × (in + out) of q (576+576), k and v (576+192), o (576+576), gate and up
        // (576+1536), down (1536+576).
        assert_eq!(lora, 30 * r * (2 * 1152 + 2 * 768 + 3 * 2112));
    }
}

#[test]
fn bad_settings_are_input_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.jsonl"), "{\"text\": \"hello\"}\n").unwrap();
    std::fs::create_dir(dir.path().join("earlier")).unwrap();
    let load = |body: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("{body}\n[data]\ntrain = \"t.jsonl\"\n")).unwrap();
        TrainConfig::load(&path, &[])
    };
    let expanded = "[adapter]\nkind = \"expanded\"";
    for (model, adapter, want) in [
        ("expand_blocks = 0", expanded, "`model.expand_blocks`: must be at least 1"),
        ("expand_blocks = 2\nkeep_layers = [0, 1]", expanded, "combined with model.keep_layers"),
        ("expand_blocks = 2\nfrom_run = \"earlier\"", expanded, "combined with model.from_run"),
        ("expand_blocks = 2\ninit = \"random\"", "[adapter]\nkind = \"none\"", "init = \"random\""),
        ("expand_blocks = 2", "[adapter]\nkind = \"lora\"", "needs adapter.kind = \"expanded\""),
        ("expand_blocks = 2", "[adapter]\nkind = \"qlora\"", "needs adapter.kind = \"expanded\""),
        ("expand_blocks = 2", "[adapter]\nkind = \"prompt_tuning\"", "needs adapter.kind = \"expanded\""),
        ("", expanded, "`adapter.kind`: \"expanded\" trains the blocks model.expand_blocks adds"),
        ("", "[adapter]\nexpanded_norms = true", "`adapter.expanded_norms`: applies only to"),
        ("expand_blocks = -1", expanded, "invalid value"),
    ] {
        let msg = load(&format!("[model]\n{model}\n{adapter}")).unwrap_err().to_string();
        assert!(msg.contains(want), "{model} / {adapter}: {msg}");
    }
    // Full fine-tuning and freezing of a grown model are allowed.
    for kind in ["none", "freeze"] {
        load(&format!("[model]\nexpand_blocks = 2\n[adapter]\nkind = \"{kind}\"")).unwrap();
    }

    // More new blocks than the model has is refused when the model is loaded.
    let mut cfg = expand_config(dir.path(), 31);
    cfg.data.train = dir.path().join("t.jsonl");
    let e = parts::build_model(&cfg).err().unwrap();
    assert_eq!(e.kind(), graft::error::ErrorKind::Input, "{e}");
    assert!(e.to_string().contains("`model.expand_blocks`: 31 new blocks for a model of 30 blocks"), "{e}");
}
