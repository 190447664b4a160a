//! Multitask training end to end (`graft multitask`'s recipe) on configs written as TOML: the
//! task of every step in `metrics.jsonl` is the sampler's draw, a killed run resumes
//! bit-identically (uncertainty log-variances included), PCGrad steps train every task and
//! lower both losses on real text with the default model, the learned log-variances move and
//! are checkpointed, per-task adapters train only on their task's steps and are saved one per
//! task, and bad task lists are refused naming the task.

mod common;

use graft::config::multitask::MultitaskConfig;
use graft::models::llama::random::small_config;
use graft::multitask::{Mixing, TaskSampler, TaskSize};
use graft::recipes::multitask;
use std::path::{Path, PathBuf};

/// A small decoder (seeded random weights) in `dir/student`.
fn small_model(dir: &Path) -> PathBuf {
    let path = dir.join("student");
    if !path.exists() {
        common::write_model_seeded(&path, &small_config(), 3);
    }
    path
}

/// `dir/qa.jsonl`: question/answer pairs in the `prompt_completion` format.
fn qa_jsonl(dir: &Path, n: usize) -> PathBuf {
    let pairs = [
        ("What colour is a clear daytime sky?", "Blue."),
        ("How many days are in a week?", "Seven."),
        ("What is frozen water called?", "Ice."),
        ("Which animal barks?", "A dog."),
        ("What do bees make?", "Honey."),
        ("How many legs does a spider have?", "Eight."),
        ("What is the opposite of hot?", "Cold."),
        ("Which planet do we live on?", "Earth."),
    ];
    let path = dir.join("qa.jsonl");
    let lines: String = pairs
        .iter()
        .cycle()
        .take(n)
        .map(|(q, a)| {
            format!("{}\n", serde_json::json!({ "prompt": format!("Q: {q}\nA:"), "completion": format!(" {a}") }))
        })
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}

/// The first `n` lines of the licence paragraphs as `dir/licence-N.jsonl`.
fn licence(dir: &Path, n: usize) -> PathBuf {
    let all = if dir.join("licence.jsonl").exists() { dir.join("licence.jsonl") } else { common::licence_jsonl(dir) };
    let text = std::fs::read_to_string(all).unwrap();
    let path = dir.join(format!("licence-{n}.jsonl"));
    std::fs::write(&path, text.lines().take(n).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    path
}

/// A multitask config over two tasks (`licence`: text, `qa`: prompt/completion) with LoRA on
/// `model`, `[multitask]` keys `multitask` and `[train]` keys `train`, written to
/// `dir/NAME.toml` and loaded.
fn config(dir: &Path, name: &str, model: &Path, tasks: &str, multitask: &str, train: &str) -> MultitaskConfig {
    let text = format!(
        r#"
[model]
name = {model:?}

[adapter]
kind = "lora"
r = 4
alpha = 8.0
dropout = 0.1
targets = ["q_proj", "v_proj"]

[data]
seq_len = 32
eval_fraction = 0.25

{tasks}

[multitask]
{multitask}

[train]
eval_batches = 2
{train}

[output]
dir = {out:?}
"#,
        model = model.display().to_string(),
        out = dir.join(name).display().to_string(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    MultitaskConfig::load(&path, &[]).unwrap()
}

/// The two tasks' entries over `licence` and `qa`.
fn two_tasks(licence: &Path, qa: &Path, eval: bool) -> String {
    let eval_of = |p: &Path| if eval { format!("eval = {:?}\n", p.display().to_string()) } else { String::new() };
    format!(
        "[[tasks]]\nname = \"licence\"\ndata = {:?}\nformat = \"text\"\n{}\n[[tasks]]\nname = \"qa\"\ndata = {:?}\nformat = \"prompt_completion\"\n{}",
        licence.display().to_string(),
        eval_of(licence),
        qa.display().to_string(),
        eval_of(qa)
    )
}

#[test]
fn drawn_tasks_follow_the_sampler_and_a_killed_run_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (model, lic, qa) = (small_model(dir.path()), licence(dir.path(), 16), qa_jsonl(dir.path(), 16));
    let tasks = two_tasks(&lic, &qa, false);
    let mixing = "mixing = \"temperature\"\nt = 2.0\nweighting = \"uncertainty\"";
    let train = "max_steps = 6\nsave_every = 2\neval_every = 2\nseed = 5\nbatch_size = 2\nlr = 1e-3";
    let whole = config(dir.path(), "whole", &model, &tasks, mixing, train);
    let summary = multitask::run(&whole, false, &mut |_| {}).unwrap();

    // Every step's task is the sampler's draw at step − 1, over the tasks' training examples.
    let parts = summary.tasks.as_ref().unwrap();
    let sizes = [TaskSize::new("licence", parts["licence"].examples), TaskSize::new("qa", parts["qa"].examples)];
    assert_eq!((sizes[0].examples, sizes[1].examples), (12, 12), "16 examples each, a quarter held out");
    let sampler = TaskSampler::new(&sizes, Mixing::Temperature { t: 2.0 }, 5).unwrap();
    let metrics = common::metrics_without_timing(&whole.output.dir);
    assert_eq!(metrics.len(), 6);
    for (k, m) in metrics.iter().enumerate() {
        let drawn = &sizes[sampler.task(k as u64)].name;
        assert_eq!(m["task"].as_str(), Some(drawn.as_str()), "step {}: {m}", k + 1);
        let losses = m["task_losses"].as_object().unwrap();
        assert_eq!(losses.keys().collect::<Vec<_>>(), [drawn], "step {}: {m}", k + 1);
        assert!(losses[drawn].as_f64().unwrap() > 0.0, "{m}");
    }
    // Steps 2 and 4 evaluated every task; the end is in the summary.
    for m in [&metrics[1], &metrics[3]] {
        assert_eq!(m["task_eval_losses"].as_object().unwrap().len(), 2, "{m}");
    }
    assert!(metrics[0].get("task_eval_losses").is_none());
    let steps: u64 = parts.values().map(|p| p.steps).sum();
    assert_eq!(steps, 6);
    assert!(parts.values().all(|p| p.eval_loss.is_finite() && p.loss_weight != 1.0), "{parts:?}");

    // Killed after step 3 (checkpoint at step 2), resumed: the same steps, adapter and summary.
    let mut cut = whole.clone();
    cut.output.dir = dir.path().join("cut");
    common::killed_at(3, |on_event| multitask::run(&cut, false, on_event));
    let resumed = multitask::run(&cut, true, &mut |_| {}).unwrap();
    assert_eq!(metrics, common::metrics_without_timing(&cut.output.dir));
    for file in ["adapter/adapter_model.safetensors", "adapter/adapter_config.json"] {
        let read = |run: &Path| std::fs::read(run.join(file)).unwrap();
        assert!(read(&whole.output.dir) == read(&cut.output.dir), "{file} differs");
    }
    assert_eq!(resumed.tasks, summary.tasks);
}

#[test]
fn pcgrad_steps_train_every_task_and_lower_both_losses_on_real_text() {
    let dir = tempfile::tempdir().unwrap();
    // Four examples per task in one batch, seen at every step, so the steps' losses compare.
    let (lic, qa) = (licence(dir.path(), 4), qa_jsonl(dir.path(), 4));
    let tasks = two_tasks(&lic, &qa, true);
    let train = "max_steps = 4\nbatch_size = 4\nlr = 5e-3\nschedule = \"constant\"";
    let cfg = config(dir.path(), "pcgrad", &common::default_gguf(), &tasks, "weighting = \"pcgrad\"", train);
    let summary = multitask::run(&cfg, false, &mut |_| {}).unwrap();
    let metrics = common::metrics_without_timing(&cfg.output.dir);
    assert_eq!(metrics.len(), 4);
    let loss = |step: usize, task: &str| metrics[step]["task_losses"][task].as_f64().unwrap();
    for m in &metrics {
        assert!(m.get("task").is_none(), "a PCGrad step trains every task: {m}");
        assert_eq!(m["task_losses"].as_object().unwrap().len(), 2, "{m}");
    }
    for task in ["licence", "qa"] {
        assert!(loss(3, task) < loss(0, task), "{task}: {} -> {}", loss(0, task), loss(3, task));
        let part = &summary.tasks.as_ref().unwrap()[task];
        assert_eq!((part.steps, part.loss_weight), (4, 1.0));
    }
    assert!(summary.final_eval_loss < summary.base_eval_loss, "{summary:?}");
}

#[test]
fn uncertainty_log_variances_move_and_are_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let (model, lic, qa) = (small_model(dir.path()), licence(dir.path(), 8), qa_jsonl(dir.path(), 8));
    let tasks = two_tasks(&lic, &qa, false);
    let mixing = "mixing = \"round_robin\"\nweighting = \"uncertainty\"";
    let cfg =
        config(dir.path(), "uw", &model, &tasks, mixing, "max_steps = 2\nsave_every = 1\nlr = 1e-2\nbatch_size = 2");
    let summary = multitask::run(&cfg, false, &mut |_| {}).unwrap();
    let metrics = common::metrics_without_timing(&cfg.output.dir);
    let drawn: Vec<_> = metrics.iter().map(|m| m["task"].as_str().unwrap().to_string()).collect();
    assert_eq!(drawn, ["licence", "qa"], "round-robin");
    let ckpt =
        graft::train::checkpoint::load_latest(&cfg.output.dir, &candle_core::Device::Cpu, |_| {}).unwrap().unwrap();
    assert_eq!(ckpt.state.step, 2);
    let s: Vec<f64> = ckpt.weights["multitask.log_vars"].to_dtype(candle_core::DType::F64).unwrap().to_vec1().unwrap();
    assert_eq!(s.len(), 2);
    // Each task trained once: its s moved off 0 (the gradient 1 − L is far from 0 for these
    // losses), and its moments are saved for an exact resume.
    assert!(s.iter().all(|v| v.abs() > 1e-4), "{s:?}");
    assert!(ckpt.optimizer.keys().any(|k| k.contains("multitask.log_vars")), "{:?}", ckpt.optimizer.keys());
    let parts = summary.tasks.unwrap();
    for (name, s) in ["licence", "qa"].iter().zip(&s) {
        assert!((parts[*name].loss_weight - (-s).exp()).abs() < 1e-6, "{name}: {parts:?} vs s = {s}");
    }
}

#[test]
fn bad_task_lists_are_refused_naming_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let (model, lic, qa) = (small_model(dir.path()), licence(dir.path(), 8), qa_jsonl(dir.path(), 8));
    let tasks = two_tasks(&lic, &qa, false);
    let write = |name: &str, tasks: &str, multitask: &str| {
        let text = format!(
            "[model]\nname = {:?}\n[data]\nseq_len = 32\n{tasks}\n[multitask]\n{multitask}\n[train]\nmax_steps = 1\n[output]\ndir = {:?}\n",
            model.display().to_string(),
            dir.path().join(name).display().to_string()
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let refused = |path: &Path, what: &[&str]| {
        let err = MultitaskConfig::load(path, &[]).unwrap_err();
        assert_eq!(err.exit_code(), 3, "{err}");
        let msg = err.to_string();
        assert!(what.iter().all(|w| msg.contains(w)), "{what:?} not in: {msg}");
    };
    refused(
        &write(
            "weight0",
            &tasks.replacen("format = \"text\"", "format = \"text\"\nweight = 0.0", 1),
            "weighting = \"fixed\"",
        ),
        &["`licence`", "weight 0"],
    );
    refused(
        &write("weight-eq", &tasks.replacen("format = \"text\"", "format = \"text\"\nweight = 2.0", 1), ""),
        &["`licence`", "fixed"],
    );
    refused(&write("twice", &tasks.replace("name = \"qa\"", "name = \"licence\""), ""), &["`licence`", "listed twice"]);
    refused(
        &write("typo", &tasks.replacen("format = \"text\"", "format = \"text\"\nwieght = 2.0", 1), ""),
        &["wieght"],
    );
    refused(&write("typo2", &tasks, "mixin = \"equal\""), &["mixin"]);
    refused(&write("no-tasks", "", ""), &["[[tasks]]"]);
    refused(&write("cap", &tasks, "mixing = \"capped\""), &["multitask.cap"]);
    refused(&write("task-r", &tasks, "task_r = 2"), &["multitask.task_r", "shared_plus_task"]);
    refused(
        &write("task-r0", &tasks, "adapters = \"shared_plus_task\"\ntask_r = 0"),
        &["multitask.task_r", "at least 1"],
    );
    refused(
        &write("per-task", &format!("[adapter]\nkind = \"none\"\n{tasks}"), "adapters = \"per_task\""),
        &["per_task", "\"none\""],
    );
    refused(&write("bad-format", &tasks.replace("prompt_completion", "prompt"), ""), &["prompt"]);

    // A task whose file holds no example is refused when its data is read, naming it.
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let with_empty =
        tasks.replace(&qa.display().to_string(), &empty.display().to_string()).replace("\"qa\"", "\"empty\"");
    let cfg = MultitaskConfig::load(&write("empty", &with_empty, ""), &[]).unwrap();
    let err = multitask::run(&cfg, false, &mut |_| {}).unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(err.to_string().contains("task `empty`"), "{err}");
}

#[test]
fn per_task_adapters_train_only_on_their_tasks_steps_and_are_saved_one_per_task() {
    let dir = tempfile::tempdir().unwrap();
    let (model, lic, qa) = (small_model(dir.path()), licence(dir.path(), 8), qa_jsonl(dir.path(), 8));
    let tasks = two_tasks(&lic, &qa, false);
    let mixing = "mixing = \"round_robin\"\nadapters = \"per_task\"";
    let train = "max_steps = 4\nsave_every = 1\nlr = 1e-2\nbatch_size = 2\nseed = 9";
    let cfg = config(dir.path(), "per-task", &model, &tasks, mixing, train);
    let summary = multitask::run(&cfg, false, &mut |_| {}).unwrap();

    // Step 1 trained `licence` only: `qa`'s factors are still their initial values (B = 0) and
    // the optimizer never touched them; step 2 trained `qa` once.
    let device = candle_core::Device::Cpu;
    let at_step = |step: u64| {
        let mut short = cfg.clone();
        short.train.max_steps = Some(step);
        short.output.dir = dir.path().join(format!("at-{step}"));
        multitask::run(&short, false, &mut |_| {}).unwrap();
        graft::train::checkpoint::load_latest(&short.output.dir, &device, |_| {}).unwrap().unwrap()
    };
    let one = at_step(1);
    let zeros = |t: &candle_core::Tensor| t.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() == 0.0;
    let qa_b: Vec<_> = one.weights.iter().filter(|(k, _)| k.starts_with("task.qa.") && k.ends_with("lora_B")).collect();
    let lic_b: Vec<_> =
        one.weights.iter().filter(|(k, _)| k.starts_with("task.licence.") && k.ends_with("lora_B")).collect();
    assert!(!qa_b.is_empty() && qa_b.len() == lic_b.len(), "{:?}", one.weights.keys());
    assert!(qa_b.iter().all(|(_, t)| zeros(t)), "qa's adapter moved while licence trained");
    assert!(lic_b.iter().any(|(_, t)| !zeros(t)), "licence's adapter did not train");
    let updates = |ckpt: &graft::train::checkpoint::Checkpoint, prefix: &str| {
        update_counts(ckpt, &|k: &str| k.starts_with(prefix))
    };
    assert_eq!((updates(&one, "task.licence."), updates(&one, "task.qa.")), (vec![1], vec![0]));
    let two = at_step(2);
    assert_eq!((updates(&two, "task.licence."), updates(&two, "task.qa.")), (vec![1], vec![1]));

    // One PEFT folder per task, tagged with its task, named in the summary.
    let parts = summary.tasks.as_ref().unwrap();
    for name in ["licence", "qa"] {
        let folder = cfg.output.dir.join("adapters").join(name);
        assert_eq!(parts[name].adapter.as_deref(), Some(folder.as_path()));
        let tag = graft::multitask::adapters::task_of(&folder).unwrap().unwrap();
        assert_eq!((tag.task.as_str(), tag.tasks.len()), (name, 2));
        assert_eq!(parts[name].steps, 2);
        assert!(parts[name].eval_loss.is_finite());
    }

    // Routing: with both adapters attached and `licence`'s parked, the model computes exactly
    // what it computes with `qa`'s alone; with both in use it does not.
    let load = || {
        graft::models::load::load_causal_lm(
            &graft::assets::ModelSource::HfFolder(model.clone()),
            &graft::models::llama::LoadOptions::default(),
        )
        .unwrap()
    };
    let ids = [1u32, 5, 9, 14, 3];
    let (mut both, mut alone) = (load(), load());
    let lic_set = graft::io::adapter::load_adapter(&cfg.output.dir.join("adapters/licence"), &mut both).unwrap();
    graft::io::adapter::load_adapter(&cfg.output.dir.join("adapters/qa"), &mut both).unwrap();
    graft::io::adapter::load_adapter(&cfg.output.dir.join("adapters/qa"), &mut alone).unwrap();
    let in_use = common::forward_logits(&both, &ids, false);
    lic_set.clock.set_active(false);
    let routed = common::forward_logits(&both, &ids, false);
    let expected = common::forward_logits(&alone, &ids, false);
    assert_eq!(common::max_abs_diff(&routed, &expected), 0.0);
    assert!(common::max_abs_diff(&in_use, &expected) > 0.0);

    // The run folder is not one adapter: `--adapter` names the tasks' own, and an unknown
    // task's folder is refused listing the tasks.
    for path in [cfg.output.dir.clone(), cfg.output.dir.join("adapters/sentiment")] {
        let err = graft::io::adapter::locate_adapter(&path).unwrap_err().to_string();
        assert!(err.contains("licence") && err.contains("qa"), "{err}");
    }

    // Killed after step 3, resumed: both adapters bit-identical.
    let mut cut = cfg.clone();
    cut.output.dir = dir.path().join("cut");
    common::killed_at(3, |on_event| multitask::run(&cut, false, on_event));
    multitask::run(&cut, true, &mut |_| {}).unwrap();
    for name in ["licence", "qa"] {
        let file = format!("adapters/{name}/adapter_model.safetensors");
        let read = |run: &Path| std::fs::read(run.join(&file)).unwrap();
        assert!(read(&cfg.output.dir) == read(&cut.output.dir), "{file} differs after resume");
    }
}

#[test]
fn a_shared_adapter_plus_small_task_adapters_train_together_and_each_task_exports_their_sum() {
    let dir = tempfile::tempdir().unwrap();
    let (model, lic, qa) = (small_model(dir.path()), licence(dir.path(), 8), qa_jsonl(dir.path(), 8));
    let tasks = two_tasks(&lic, &qa, false);
    let mixing = "mixing = \"round_robin\"\nadapters = \"shared_plus_task\"\ntask_r = 2";
    let train = "max_steps = 2\nsave_every = 1\nlr = 1e-2\nbatch_size = 2\nseed = 4";
    let cfg = config(dir.path(), "shared-task", &model, &tasks, mixing, train);
    multitask::run(&cfg, false, &mut |_| {}).unwrap();

    // Step 1 trained the shared adapter and licence's, step 2 the shared one and qa's.
    let ckpt =
        graft::train::checkpoint::load_latest(&cfg.output.dir, &candle_core::Device::Cpu, |_| {}).unwrap().unwrap();
    let counts = |keep: &dyn Fn(&str) -> bool| update_counts(&ckpt, keep);
    assert_eq!(counts(&|k| !k.starts_with("task.")), [2], "the shared adapter trains every step");
    assert_eq!(counts(&|k| k.starts_with("task.licence.")), [1]);
    assert_eq!(counts(&|k| k.starts_with("task.qa.")), [1]);

    // The shared adapter alone in adapter/, each task's whole adapter (rank 4 + 2, scale 1) in
    // adapters/NAME, tagged; the two tasks' differ.
    assert!(cfg.output.dir.join("adapter/adapter_config.json").is_file());
    let read_cfg = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(cfg.output.dir.join("adapters").join(name).join("adapter_config.json"));
        serde_json::from_str(&text.unwrap()).unwrap()
    };
    for name in ["licence", "qa"] {
        let c = read_cfg(name);
        assert_eq!((c["r"].as_u64(), c["lora_alpha"].as_f64()), (Some(6), Some(6.0)), "{c}");
        let tag = graft::multitask::adapters::task_of(&cfg.output.dir.join("adapters").join(name)).unwrap().unwrap();
        assert_eq!(tag.task, name);
    }
    let weights =
        |name: &str| std::fs::read(cfg.output.dir.join("adapters").join(name).join("adapter_model.safetensors"));
    assert!(weights("licence").unwrap() != weights("qa").unwrap());

    // The sum is exact: two LoRA sets attached together compute what their concatenation
    // saved as one PEFT adapter computes.
    use graft::adapters::lora;
    let load = || {
        graft::models::load::load_causal_lm(
            &graft::assets::ModelSource::HfFolder(model.clone()),
            &graft::models::llama::LoadOptions::default(),
        )
        .unwrap()
    };
    let spec = |r: usize, alpha: f64| lora::LoraSpec {
        r,
        alpha,
        dropout: 0.0,
        rslora: false,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
    };
    let mut two = load();
    let (a, b) = (lora::attach(&mut two, &spec(4, 8.0), 1).unwrap(), lora::attach(&mut two, &spec(2, 1.0), 2).unwrap());
    for layer in a.layers.iter().chain(&b.layers) {
        let like = layer.b().as_tensor();
        layer.b().set(&candle_core::Tensor::randn(0f32, 0.05, like.dims(), like.device()).unwrap()).unwrap();
    }
    let summed = lora::concat(&[&a, &b]).unwrap();
    let saved = dir.path().join("summed");
    graft::io::peft::save_lora(&summed, &saved, "small").unwrap();
    let mut one = load();
    graft::io::adapter::load_adapter(&saved, &mut one).unwrap();
    let ids = [1u32, 5, 9, 14, 3, 7];
    let (expected, got) = (common::forward_logits(&two, &ids, false), common::forward_logits(&one, &ids, false));
    assert!(common::max_abs_diff(&expected, &got) < 1e-4, "{}", common::max_abs_diff(&expected, &got));
    assert!(common::max_abs_diff(&expected, &common::forward_logits(&load(), &ids, false)) > 1e-3);
}

/// The distinct optimizer update counts (`NAME.updates`) of the variables whose names pass `keep`,
/// sorted.
fn update_counts(ckpt: &graft::train::checkpoint::Checkpoint, keep: &dyn Fn(&str) -> bool) -> Vec<i64> {
    let mut counts: Vec<i64> = ckpt
        .optimizer
        .iter()
        .filter(|(k, _)| k.ends_with(".updates") && keep(k))
        .map(|(_, t)| t.to_vec1::<i64>().unwrap()[0])
        .collect();
    counts.sort();
    counts.dedup();
    counts
}
