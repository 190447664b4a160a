//! Soft prompt tuning and prefix tuning: what the virtual tokens compute (checked against the
//! model run on real tokens), gradients, checkpointing, PEFT files, config errors, and
//! learning plus exact resume on the default model.

mod common;

use candle_core::{DType, Device, Tensor};
use graft::adapters::prompt::{self, PromptInit, PromptKind, PromptSpec};
use graft::config::{AdapterKind, TrainConfig};
use graft::models::llama::random::{smollm2_135m_config, RandomWeights};
use graft::models::llama::{Llama, LoadOptions, Pass, VirtualTokens};
use graft::models::{KvCache, Model};
use graft::ops::CheckpointMode;
use graft::recipes::{finetune, parts};
use std::path::Path;

const DEV: Device = Device::Cpu;

/// A small random Llama (GQA: 4 query heads, 2 KV heads) in f64.
fn tiny_model() -> Llama {
    tiny_model_in(DType::F64)
}

/// The same model in `dtype` (the inference kernels need f32 or narrower).
fn tiny_model_in(dtype: DType) -> Llama {
    let mut cfg = smollm2_135m_config();
    cfg.vocab_size = 97;
    cfg.hidden_size = 32;
    cfg.intermediate_size = 48;
    cfg.num_hidden_layers = 2;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 2;
    cfg.head_dim = Some(8);
    cfg.max_position_embeddings = 64;
    let opts = LoadOptions { dtype, ..LoadOptions::default() };
    Llama::load(cfg.clone(), &RandomWeights::new(cfg, 3), &opts).unwrap()
}

fn ids(b: usize, t: usize, seed: u32) -> Tensor {
    Tensor::from_vec((0..b * t).map(|i| (i as u32 * 13 + seed) % 97).collect::<Vec<_>>(), (b, t), &DEV).unwrap()
}

fn logits(model: &Llama, x: &Tensor, pass: Pass) -> Tensor {
    let h = model.hidden_states(x, None, pass).unwrap();
    model.lm_head(&h, pass).unwrap()
}

/// Virtual tokens equal to real ones must compute what the real tokens compute: a soft prompt
/// of token `p`'s embeddings, or a prefix of the keys and values the model caches for `p`,
/// gives the logits of running `[p, x]` at `x`'s positions — in the training and inference
/// passes, and in incremental decoding.
#[test]
fn virtual_tokens_equal_to_real_tokens_reproduce_them() {
    // f64 checks the training pass tightly; f32 adds the inference kernels and the KV cache.
    for (dtype, passes, tol) in
        [(DType::F64, vec![Pass::Train], 1e-10), (DType::F32, vec![Pass::Train, Pass::Infer], 1e-4)]
    {
        let mut model = tiny_model_in(dtype);
        let (n, t) = (3, 5);
        let p = ids(1, n, 7);
        let x = ids(1, t, 1);
        let full = logits(&model, &Tensor::cat(&[&p, &x], 1).unwrap(), Pass::Train).narrow(1, n, t).unwrap();

        let prompt = model.embedding_rows(&p).unwrap();
        let mut cache = KvCache::new(2);
        model.hidden_states(&p, Some(&mut cache), Pass::Train).unwrap();
        let cfg = model.config().clone();
        // PEFT's flat prefix row: for every layer, keys then values, [kv_heads, head_dim] each.
        let mut per_layer = Vec::new();
        for l in 0..cfg.num_hidden_layers {
            let (k, v) = cache.layer(l).unwrap();
            let kv = [k, v].map(|t| t.squeeze(0).unwrap().transpose(0, 1).unwrap());
            per_layer.push(Tensor::stack(&kv, 1).unwrap());
        }
        let prefix = Tensor::stack(&per_layer, 1).unwrap().reshape((n, ())).unwrap();

        for (kind, tokens) in [("prompt", VirtualTokens::Prompt(prompt)), ("prefix", VirtualTokens::Prefix(prefix))] {
            model.set_virtual_tokens(Some(tokens)).unwrap();
            for &pass in &passes {
                let got = logits(&model, &x, pass);
                assert!(
                    common::max_abs_diff(&got, &full) < tol,
                    "{kind} {dtype:?} {pass:?}: {}",
                    common::max_abs_diff(&got, &full)
                );
            }
            if dtype == DType::F32 {
                // Generation: the prompt in one call, then one token at a time through the cache.
                let mut cache = model.new_cache();
                let first = model.forward_infer(&x.narrow(1, 0, 3).unwrap(), &mut cache).unwrap();
                let rest: Vec<Tensor> =
                    (3..t).map(|i| model.forward_infer(&x.narrow(1, i, 1).unwrap(), &mut cache).unwrap()).collect();
                let stepped = Tensor::cat(&[vec![first], rest].concat(), 1).unwrap();
                assert!(
                    common::max_abs_diff(&stepped, &full) < tol,
                    "{kind} cached decoding: {}",
                    common::max_abs_diff(&stepped, &full)
                );
                assert_eq!(cache.len(), n + t);
            }
        }
        model.set_virtual_tokens(None).unwrap();
        assert!(common::max_abs_diff(&logits(&model, &x, Pass::Train), &full) > 1e-3, "the context must matter");
        let bad = VirtualTokens::Prefix(Tensor::zeros((2, 5), dtype, &DEV).unwrap());
        assert!(model.set_virtual_tokens(Some(bad)).is_err());
    }
}

fn attach(model: &mut Llama, kind: PromptKind, n: usize) -> prompt::PromptAdapter {
    let spec = PromptSpec { kind, num_virtual_tokens: n, init: PromptInit::Random };
    let tok = graft::tokenizer::Tokenizer::from_source(
        &graft::assets::resolve_model("smollm2-135m-instruct", false).unwrap(),
    )
    .unwrap();
    prompt::attach(model, &spec, &tok, 11).unwrap()
}

/// Both kinds: every element of the trainable tensor gets a gradient, and gradient
/// checkpointing gives the same loss and gradients.
#[test]
fn every_virtual_token_gets_a_gradient_with_and_without_checkpointing() {
    let (x, targets) = (ids(2, 6, 1), ids(2, 6, 2));
    let mask = Tensor::ones((2, 6), DType::F64, &DEV).unwrap();
    for kind in [PromptKind::PromptTuning, PromptKind::PrefixTuning] {
        let mut results = Vec::new();
        for checkpointing in [None, Some(CheckpointMode::Blocks), Some(CheckpointMode::Nested)] {
            let mut model = tiny_model();
            model.set_gradient_checkpointing(checkpointing.is_some());
            model.set_checkpoint_mode(checkpointing.unwrap_or_default());
            let adapter = attach(&mut model, kind, 4);
            let loss = model.token_nll(&x, &targets, &mask, Pass::Train).unwrap().sum_all().unwrap();
            let mut grads = loss.backward().unwrap();
            if let Some(sink) = model.grad_sink() {
                sink.drain_into(&mut grads).unwrap();
            }
            let g = grads.get(adapter.var.as_tensor()).unwrap_or_else(|| panic!("{kind:?}: no gradient")).clone();
            // Every virtual token (row) and every layer's keys and values move the loss.
            let row_norms: Vec<f64> = g.abs().unwrap().sum(1).unwrap().to_vec1().unwrap();
            assert!(row_norms.iter().all(|&s| s > 0.0 && s.is_finite()), "{kind:?}: {row_norms:?}");
            if kind == PromptKind::PrefixTuning {
                let per_layer_kv: Vec<f64> =
                    g.reshape((4, 4, 16)).unwrap().abs().unwrap().sum((0, 2)).unwrap().to_vec1().unwrap();
                assert!(per_layer_kv.iter().all(|&s| s > 0.0), "{per_layer_kv:?}");
            }
            assert_eq!(model.make_trainable(|_| false).unwrap().len(), 0);
            results.push((loss.to_scalar::<f64>().unwrap(), g));
        }
        for (loss, g) in &results[1..] {
            assert!((results[0].0 - loss).abs() < 1e-12);
            assert!(common::max_abs_diff(&results[0].1, g) < 1e-12, "{kind:?}: checkpointed gradient differs");
        }
    }
}

/// Saving writes PEFT's config and tensor; loading into a fresh model gives identical logits.
#[test]
fn peft_files_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let x = ids(2, 5, 3);
    for (kind, dims, heads, dim) in
        [(PromptKind::PromptTuning, [6, 32], 4, 32), (PromptKind::PrefixTuning, [6, 2 * 2 * 16], 2, 16)]
    {
        let mut model = tiny_model();
        let adapter = attach(&mut model, kind, 6);
        adapter.var.set(&(adapter.var.as_tensor() * 1.5).unwrap()).unwrap();
        let out = dir.path().join(kind.peft_type());
        graft::io::peft_prompt::save_prompt(&adapter, &model, &out, "tiny").unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
        assert_eq!(cfg["peft_type"], kind.peft_type());
        assert_eq!(cfg["task_type"], "CAUSAL_LM");
        assert_eq!(cfg["num_virtual_tokens"], 6);
        assert_eq!(cfg["token_dim"], dim);
        assert_eq!(cfg["num_attention_heads"], heads);
        assert_eq!(cfg["num_layers"], 2);
        assert_eq!(cfg["num_transformer_submodules"], 1);
        let stored = candle_core::safetensors::load(out.join("adapter_model.safetensors"), &DEV).unwrap();
        assert_eq!(stored.keys().collect::<Vec<_>>(), ["prompt_embeddings"]);
        assert_eq!(stored["prompt_embeddings"].dims(), dims);
        assert!(graft::io::peft_prompt::is_prompt_adapter(&out));

        let mut fresh = tiny_model();
        let loaded = graft::io::peft_prompt::load_prompt(&out, &mut fresh).unwrap();
        assert_eq!(loaded.spec.kind, kind);
        // Stored in f32: compare with the adapter rounded the same way.
        adapter.var.set(&adapter.var.as_tensor().to_dtype(DType::F32).unwrap().to_dtype(DType::F64).unwrap()).unwrap();
        assert_eq!(common::max_abs_diff(&logits(&model, &x, Pass::Train), &logits(&fresh, &x, Pass::Train)), 0.0);
        // A prefix for another model shape is refused, naming the problem.
        let mut other = tiny_model();
        other.set_virtual_tokens(None).unwrap();
        let mut text = std::fs::read_to_string(out.join("adapter_config.json")).unwrap();
        text = text.replace("\"num_virtual_tokens\": 6", "\"num_virtual_tokens\": 7");
        std::fs::write(out.join("adapter_config.json"), text).unwrap();
        let err = graft::io::peft_prompt::load_prompt(&out, &mut other).unwrap_err().to_string();
        assert!(err.contains("prompt_embeddings") && err.contains("expected [7,"), "{err}");
    }
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let load = |body: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, format!("[data]\ntrain = \"x.jsonl\"\n[adapter]\n{body}")).unwrap();
        TrainConfig::load(&p, &[])
    };
    let err = |body: &str| load(body).unwrap_err().to_string();
    assert!(err("kind = \"prompt_tuning\"\nnum_virtual_tokens = 0\n").contains("adapter.num_virtual_tokens"));
    assert!(err("kind = \"prefix_tuning\"\nnum_virtual_tokens = 0\n").contains("adapter.num_virtual_tokens"));
    assert!(err("kind = \"prompt_tuning\"\nprompt_init_text = \"  \"\n").contains("adapter.prompt_init_text"));
    assert!(err("kind = \"prefix_tuning\"\nprompt_init_text = \"Classify:\"\n").contains("adapter.prompt_init_text"));
    assert!(err("kind = \"prompt_tuning\"\nnum_virtual_token = 4\n").contains("unknown field `num_virtual_token`"));
    let cfg = load("kind = \"prompt_tuning\"\nprompt_init_text = \"Classify the tweet:\"\n").unwrap();
    assert_eq!(cfg.adapter.kind, AdapterKind::PromptTuning);
    assert_eq!(cfg.adapter.num_virtual_tokens, 20);
}

fn losses(run: &Path) -> Vec<f64> {
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    metrics.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap()).collect()
}

/// On the tiny model, plain gradient descent on the prefix (or soft prompt) alone lowers the
/// loss of a fixed batch over 20 steps: the frozen model can be steered through it.
#[test]
fn twenty_steps_on_the_virtual_tokens_lower_the_loss() {
    let (x, targets) = (ids(2, 8, 4), ids(2, 8, 9));
    let mask = Tensor::ones((2, 8), DType::F64, &DEV).unwrap();
    for kind in [PromptKind::PromptTuning, PromptKind::PrefixTuning] {
        let mut model = tiny_model();
        let adapter = attach(&mut model, kind, 4);
        let mut curve = Vec::new();
        for _ in 0..20 {
            let loss = model.token_nll(&x, &targets, &mask, Pass::Train).unwrap().mean_all().unwrap();
            let g = loss.backward().unwrap().get(adapter.var.as_tensor()).unwrap().clone();
            adapter.var.set(&(adapter.var.as_tensor() - (g * 2.0).unwrap()).unwrap()).unwrap();
            curve.push(loss.to_scalar::<f64>().unwrap());
        }
        // The random model's outputs are near uniform, so the possible gain is small; every step
        // must still help.
        assert!(curve.windows(2).all(|w| w[1] < w[0]) && curve[19] < curve[0] - 0.01, "{kind:?}: {curve:?}");
    }
}

/// On the default model: prompt tuning (text init) lowers the held-out loss of real text; the
/// saved adapter reloads to the trained values; a run resumed from its middle checkpoint
/// repeats the remaining steps exactly.
#[test]
fn prompt_tuning_learns_real_text_saves_and_resumes_on_the_default_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig::default();
    cfg.adapter.kind = AdapterKind::PromptTuning;
    cfg.adapter.num_virtual_tokens = 8;
    cfg.adapter.prompt_init_text = Some("Text of the Apache License:".into());
    cfg.data.train = common::licence_jsonl(dir.path());
    cfg.data.seq_len = 32;
    cfg.data.eval_fraction = 0.2;
    cfg.train.batch_size = 2;
    cfg.train.max_steps = Some(8);
    cfg.train.save_every = 4;
    cfg.train.eval_batches = 1;
    cfg.train.lr = 3e-2;
    cfg.output.dir = dir.path().join("run");
    cfg.validate().unwrap();
    let summary = finetune::run(&cfg, false, &mut |_| {}).unwrap();
    let run = losses(&cfg.output.dir);
    eprintln!(
        "eval loss {:.4} -> {:.4}; train losses {run:?}; {:.1} s",
        summary.base_eval_loss, summary.final_eval_loss, summary.wall_time_s
    );
    assert!(
        summary.final_eval_loss < summary.base_eval_loss - 0.05,
        "held-out loss {} -> {}",
        summary.base_eval_loss,
        summary.final_eval_loss
    );
    assert_eq!(run.len(), 8);

    // The adapter folder reloads onto a fresh model with the trained values, and they matter.
    let mut tm = parts::build_model(&cfg).unwrap();
    let trained = candle_core::safetensors::load(summary.output.join("adapter_model.safetensors"), &DEV).unwrap();
    let loaded = graft::io::peft_prompt::load_prompt(&summary.output, &mut tm.model).unwrap();
    assert_eq!(common::max_abs_diff(loaded.var.as_tensor(), &trained["prompt_embeddings"]), 0.0);
    let x = Tensor::new(&[[1u32, 504, 2409, 5184]], &DEV).unwrap();
    let with = logits(&tm.model, &x, Pass::Infer);
    tm.model.set_virtual_tokens(None).unwrap();
    assert!(common::max_abs_diff(&with, &logits(&tm.model, &x, Pass::Infer)) > 1e-3, "the adapter changes nothing");

    // Resume from step 4: steps 5..8 are repeated exactly.
    let ckpts = cfg.output.dir.join("checkpoints");
    let newest = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("step-"))
        .max()
        .unwrap();
    assert!(newest.ends_with("step-00000008"));
    std::fs::remove_dir_all(newest).unwrap();
    finetune::run(&cfg, true, &mut |_| {}).unwrap();
    let resumed = losses(&cfg.output.dir);
    assert_eq!(resumed.len(), 8);
    for (a, b) in run.iter().zip(&resumed) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "resumed loss {b} vs {a}");
    }
}
