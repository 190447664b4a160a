//! On-policy distillation (`distill.on_policy`, GKD's λ): a share of 0 is the run without the key
//! to the bit, an on-policy batch holds each prompt followed by the student's own continuation
//! (checked against the generator itself), steps are drawn from the seed and the step, a run
//! with λ = 0.5 resumes bit-identically, and what cannot work is refused naming the key.

mod common;

use graft::config::distill::{DistillConfig, LossName};
use graft::config::AdapterKind;
use graft::data::{make_batches, DataFormat, Example};
use graft::generate::{generate, GenerateOptions, SamplingConfig};
use graft::models::llama::random::small_config;
use graft::objectives::on_policy::OnPolicy;
use graft::recipes::distill;
use graft::tokenizer::Tokenizer;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// A small decoder (seeded random weights, the default model's tokenizer) in `dir/name`.
fn small_model(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let path = dir.join(name);
    if !path.exists() {
        common::write_model_seeded(&path, &small_config(), seed);
    }
    path
}

/// Prompt / completion pairs from the licence text: the first six words of each paragraph as
/// the prompt, the next six as the completion.
fn prompt_completion(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(common::licence_jsonl(dir)).unwrap();
    let lines: String = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .filter(|p| p.split_whitespace().count() >= 12)
        .take(12)
        .map(|p| {
            let words: Vec<&str> = p.split_whitespace().collect();
            let (prompt, completion) = (words[..6].join(" "), format!(" {}", words[6..12].join(" ")));
            format!("{}\n", serde_json::json!({ "prompt": prompt, "completion": completion }))
        })
        .collect();
    let path = dir.join("pc.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

/// A LoRA student (dropout on) distilled from another small decoder on the prompt / completion
/// pairs, 3 steps of batch 2.
fn config(dir: &Path, run: &str) -> DistillConfig {
    let mut cfg = DistillConfig::default();
    cfg.model.name = small_model(dir, "student", 3).display().to_string();
    cfg.adapter.kind = AdapterKind::Lora;
    cfg.adapter.r = 4;
    cfg.adapter.dropout = 0.1;
    cfg.adapter.targets = vec!["q_proj".into(), "v_proj".into()];
    cfg.data.train = if dir.join("pc.jsonl").exists() { dir.join("pc.jsonl") } else { prompt_completion(dir) };
    cfg.data.format = DataFormat::PromptCompletion;
    cfg.data.seq_len = 32;
    cfg.data.eval_fraction = 0.2;
    cfg.train.batch_size = 2;
    cfg.train.max_steps = Some(3);
    cfg.train.eval_batches = 1;
    cfg.train.lr = 1e-3;
    cfg.output.dir = dir.join(run);
    cfg.teacher.model = small_model(dir, "teacher", 7).display().to_string();
    cfg.distill.temperature = 2.0;
    cfg.distill.on_policy_max_new_tokens = 6;
    cfg
}

fn adapter(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap()
}

#[test]
fn share_zero_is_the_run_without_the_key_and_share_one_trains_on_the_students_samples() {
    let dir = tempfile::tempdir().unwrap();
    // No on-policy key at all, as a config written before the keys existed.
    let toml_path = dir.path().join("plain.toml");
    let plain = config(dir.path(), "plain");
    let mut text = toml::to_string(&plain).unwrap();
    for key in ["on_policy", "on_policy_max_new_tokens", "on_policy_temperature", "on_policy_top_p"] {
        text = text.lines().filter(|l| !l.starts_with(&format!("{key} ="))).map(|l| format!("{l}\n")).collect();
    }
    assert!(!text.contains("on_policy"), "{text}");
    std::fs::write(&toml_path, text).unwrap();
    let plain = DistillConfig::load(&toml_path, &[]).unwrap();
    distill::run(&plain, false, &mut |_| {}).unwrap();

    // λ = 0 with every other on-policy key set: the same run to the bit.
    let mut zero = config(dir.path(), "zero");
    (zero.distill.on_policy_temperature, zero.distill.on_policy_top_p) = (0.7, 0.9);
    distill::run(&zero, false, &mut |_| {}).unwrap();
    let (a, b) = (common::metrics_without_timing(&plain.output.dir), common::metrics_without_timing(&zero.output.dir));
    assert_eq!(a, b);
    assert!(a.iter().all(|r| r.get("on_policy").is_none() && r.get("generated_tokens").is_none()), "{a:?}");
    assert!(adapter(&plain.output.dir) == adapter(&zero.output.dir), "the adapters differ");

    // λ = 1: every step on the student's samples, the divergence alone as the loss.
    let mut one = config(dir.path(), "one");
    one.distill.on_policy = 1.0;
    distill::run(&one, false, &mut |_| {}).unwrap();
    let c = common::metrics_without_timing(&one.output.dir);
    assert_eq!(c.len(), 3);
    for r in &c {
        assert_eq!(r["on_policy"], true, "{r}");
        // 2 rows of at most 6 new tokens (a random decoder rarely stops at its EOS).
        let generated = r["generated_tokens"].as_u64().unwrap();
        assert!((1..=12).contains(&generated), "{r}");
        assert!(r["metrics"].get("ce").is_none(), "no cross-entropy on the student's own samples: {r}");
        let (loss, kd) = (r["loss"].as_f64().unwrap(), r["metrics"]["kd"].as_f64().unwrap());
        assert!((loss - kd).abs() <= 1e-5 * kd.abs().max(1.0), "{r}");
    }
    assert_ne!(c[0]["loss"], a[0]["loss"], "the first step trained on other sequences");
    assert!(adapter(&one.output.dir) != adapter(&plain.output.dir));
}

/// Rows of `prompts` followed by a completion of `completion_len` tokens (supervised).
fn rows(tok: &Tokenizer, prompts: &[&str], completion_len: usize) -> Vec<Example> {
    prompts
        .iter()
        .map(|p| {
            let mut ids = tok.encode(p, false).unwrap();
            let prompt_len = ids.len();
            ids.extend(tok.encode(" and so on and so on and so on", false).unwrap().into_iter().take(completion_len));
            let supervised = (0..ids.len()).map(|i| i >= prompt_len).collect();
            Example { ids, supervised }
        })
        .collect()
}

/// The supervised targets of each row of `batch`, and each row's ids before its first one.
fn split_rows(batch: &graft::data::Batch) -> Vec<(Vec<u32>, Vec<u32>)> {
    let (ids, targets, mask) = (
        batch.ids.to_vec2::<u32>().unwrap(),
        batch.targets.to_vec2::<u32>().unwrap(),
        batch.mask.to_vec2::<f32>().unwrap(),
    );
    (0..ids.len())
        .map(|r| {
            let first = mask[r].iter().position(|&m| m > 0.0).unwrap();
            let supervised = (0..mask[r].len()).filter(|&i| mask[r][i] > 0.0).map(|i| targets[r][i]).collect();
            (ids[r][..=first].to_vec(), supervised)
        })
        .collect()
}

#[test]
fn greedy_on_policy_batches_hold_the_students_greedy_continuation_of_each_prompt() {
    let model = common::default_llama();
    let source = graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).unwrap();
    let tok = Tokenizer::from_source(&source).unwrap();
    let prompts = ["The capital of France is", "One, two, three, four,", "The licence grants you"];
    let examples = rows(&tok, &prompts, 4);
    let pad = tok.batch_pad_id();
    let batch = make_batches(&examples, 3, 24, false, pad, &candle_core::Device::Cpu).unwrap().remove(0);
    let mut on_policy = OnPolicy {
        share: 1.0,
        max_new_tokens: 8,
        sampling: SamplingConfig::default(),
        seed: 5,
        grad_accum: 1,
        seq_len: 24,
        eos_ids: vec![],
        pad_id: pad,
    };
    let greedy = |prompt: &[u32], max_new_tokens: usize, eos_ids: Vec<u32>| {
        let opts = GenerateOptions { max_new_tokens, eos_ids, ..GenerateOptions::default() };
        generate(&model, prompt, &opts, &mut |_| Ok(ControlFlow::Continue(()))).unwrap().new_ids
    };
    let rebuilt = on_policy.rebuild(&model, &batch, 0).unwrap();
    let (before, after) = (split_rows(&batch), split_rows(&rebuilt.batch));
    let mut total = 0;
    for (r, ((prompt, data), (prompt_after, sample))) in before.iter().zip(&after).enumerate() {
        assert_eq!(prompt, &tok.encode(prompts[r], false).unwrap(), "row {r}'s prompt");
        assert_eq!(prompt_after, prompt, "row {r} keeps its prompt");
        let expected = greedy(prompt, 8.min(24 - prompt.len()), vec![]);
        assert_eq!(sample, &expected, "row {r}: {:?}", tok.decode(sample, false));
        assert_ne!(sample, data, "row {r} no longer holds the data's completion");
        total += sample.len();
    }
    assert_eq!(rebuilt.generated, total);
    assert_eq!(rebuilt.batch.n_targets, total);

    // A sample ends at the EOS, which is supervised: here the third token the student picks
    // after the first prompt plays the EOS.
    let first = &before[0].0;
    let eos = greedy(first, 8, vec![])[2];
    on_policy.eos_ids = vec![eos];
    let stopped = split_rows(&on_policy.rebuild(&model, &batch, 0).unwrap().batch);
    let expected = greedy(first, 8, vec![eos]);
    assert_eq!(expected.last(), Some(&eos));
    assert!(expected.len() <= 3);
    assert_eq!(stopped[0].1, expected);

    // Prompt and sample stay within data.seq_len: 2 tokens of room after the longest prompt.
    let longest = before.iter().map(|(p, _)| p.len()).max().unwrap();
    on_policy.eos_ids.clear();
    on_policy.seq_len = longest + 2;
    let capped = split_rows(&on_policy.rebuild(&model, &batch, 0).unwrap().batch);
    for ((prompt, _), (_, sample)) in before.iter().zip(&capped) {
        assert_eq!(sample.len(), 8.min(longest + 2 - prompt.len()));
    }
}

#[test]
fn steps_are_drawn_from_the_seed_and_the_step_and_samples_from_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |share: f64, grad_accum: u64| OnPolicy {
        share,
        max_new_tokens: 5,
        sampling: SamplingConfig { temperature: 1.0, ..SamplingConfig::default() },
        seed: 9,
        grad_accum,
        seq_len: 32,
        eos_ids: vec![],
        pad_id: 0,
    };
    let on = |o: &OnPolicy| (0..1000).filter(|&s| o.step_is_on_policy(s)).count();
    assert_eq!(on(&settings(0.0, 1)), 0);
    assert_eq!(on(&settings(1.0, 1)), 1000);
    let share = on(&settings(0.3, 1));
    assert!((240..=360).contains(&share), "{share} of 1000 steps at λ = 0.3");
    // The micro-batches of one step share its draw.
    let o = settings(0.5, 4);
    for step in 0..50 {
        for micro in step * 4..step * 4 + 4 {
            assert_eq!(o.micro_step_is_on_policy(micro), o.step_is_on_policy(step));
        }
    }
    // Sampled continuations are a function of (seed, micro-step, row).
    let source = graft::assets::resolve_model(&small_model(dir.path(), "m", 3).display().to_string(), false).unwrap();
    let model = graft::models::load::load_causal_lm(&source, &Default::default()).unwrap();
    let tok =
        Tokenizer::from_source(&graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).unwrap()).unwrap();
    let examples = rows(&tok, &["Same prompt", "Same prompt"], 3);
    let batch = make_batches(&examples, 2, 32, false, 0, &candle_core::Device::Cpu).unwrap().remove(0);
    let samples = |micro| split_rows(&o.rebuild(&model, &batch, micro).unwrap().batch);
    let (a, b, c) = (samples(7), samples(7), samples(8));
    assert_eq!(a, b);
    assert_ne!(a[0].1, a[1].1, "two rows with one prompt draw different samples");
    assert_ne!(a, c, "another micro-step draws other samples");
}

#[test]
fn a_killed_half_on_policy_run_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut whole = config(dir.path(), "whole");
    (whole.train.max_steps, whole.train.save_every) = (Some(6), 2);
    whole.distill.on_policy = 0.5;
    whole.distill.loss = LossName::Jsd;
    whole.distill.beta = Some(0.5);
    common::distill_resumes_bit_identically(&whole, dir.path());
    let steps = common::metrics_without_timing(&whole.output.dir);
    let on: Vec<bool> = steps.iter().map(|r| r["on_policy"].as_bool().unwrap()).collect();
    assert!(on.contains(&true) && on.contains(&false), "seed {} gives both kinds of step: {on:?}", whole.train.seed);
    for r in &steps {
        let generated = r["generated_tokens"].as_u64().unwrap();
        assert_eq!(generated > 0, r["on_policy"] == true, "{r}");
        assert_eq!(r["metrics"].get("ce").is_some(), r["on_policy"] == false, "{r}");
    }
}

#[test]
fn on_policy_keys_are_checked_refusals_name_the_key_and_the_docs_list_them() {
    let dir = tempfile::tempdir().unwrap();
    let write = |body: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, format!("[data]\ntrain = \"x.jsonl\"\n[teacher]\nmodel = \"m\"\n[distill]\n{body}"))
            .unwrap();
        DistillConfig::load(&p, &[]).map(|_| ()).unwrap_err().to_string()
    };
    for bad in ["on_policy = 1.5", "on_policy = -0.1", "on_policy = nan", "on_policy = inf"] {
        let e = write(bad);
        assert!(e.contains("distill.on_policy`") && e.contains("[0, 1]"), "{bad}: {e}");
    }
    assert!(write("on_policy_max_new_tokens = 0").contains("distill.on_policy_max_new_tokens"));
    assert!(write("on_policy_temperature = -1.0").contains("distill.on_policy_temperature"));
    assert!(write("on_policy_temperature = nan").contains("distill.on_policy_temperature"));
    assert!(write("on_policy_top_p = 0.0").contains("distill.on_policy_top_p"));
    assert!(write("on_policy_top_p = 1.5").contains("distill.on_policy_top_p"));
    assert!(write("lmbda = 0.5").contains("unknown field `lmbda`"));
    let refused = |body: &str, why: &str| {
        let e = write(&format!("on_policy = 0.5\n{body}"));
        assert!(e.contains("distill.on_policy") && e.contains(why), "{body}: {e}");
    };
    refused("teacher_cache = \"cache\"", "teacher_cache");
    refused("loss = \"uld\"", "uld");
    let p = dir.path().join("packed.toml");
    std::fs::write(
        &p,
        "[data]\ntrain = \"x.jsonl\"\npacking = true\n[teacher]\nmodel = \"m\"\n[distill]\non_policy = 1\n",
    )
    .unwrap();
    let e = DistillConfig::load(&p, &[]).unwrap_err().to_string();
    assert!(e.contains("distill.on_policy") && e.contains("data.packing"), "{e}");
    // The same combinations at λ = 0 are accepted: nothing generates.
    let mut cfg = DistillConfig::load(&p, &["data.packing=false".into()]).unwrap();
    cfg.distill.on_policy = 0.0;
    for (cache, loss, packing) in
        [(true, LossName::ForwardKl, false), (false, LossName::Uld, false), (false, LossName::ForwardKl, true)]
    {
        cfg.distill.teacher_cache = cache.then(|| "cache".into());
        (cfg.distill.loss, cfg.data.packing) = (loss, packing);
        cfg.validate().unwrap();
    }

    // Every key of [distill] is a row of the docs' table.
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/distillation.md")).unwrap();
    let keys = toml::Value::try_from(graft::config::distill::DistillSection::default()).unwrap();
    for key in keys.as_table().unwrap().keys() {
        assert!(docs.contains(&format!("| `{key}` |")), "docs/distillation.md has no row for distill.{key}");
    }
}
