//! The continual-learning runner end to end (`graft continual`'s recipe) on a small decoder
//! with seeded random weights and three tiny tasks (licence text and questions scored by
//! held-out loss, a yes/no task scored by label-scoring accuracy): every method fills its
//! matrix, one entry of it equals an independent evaluation of its stage, per-task LoRA keeps
//! its tasks apart, a rerun trains nothing, and bad input is refused naming the task.

mod common;

use graft::config::continual::ContinualConfig;
use graft::continual::{Direction, ScoreMatrix};
use graft::models::llama::random::small_config;
use graft::recipes::continual;
use std::path::{Path, PathBuf};

/// `dir/NAME.jsonl` in the `prompt_completion` format from `(prompt, completion)` pairs, the
/// list repeated to `n` lines.
fn pairs_jsonl(dir: &Path, name: &str, pairs: &[(&str, &str)], n: usize) -> PathBuf {
    let path = dir.join(format!("{name}.jsonl"));
    let lines: String = pairs
        .iter()
        .cycle()
        .take(n)
        .map(|(p, c)| format!("{}\n", serde_json::json!({ "prompt": p, "completion": c })))
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}

/// The three tasks' files in `dir`: (licence text, questions, yes/no), each with an eval file.
fn task_entries(dir: &Path) -> String {
    let licence = common::licence_jsonl(dir);
    let text = std::fs::read_to_string(&licence).unwrap();
    let (train, eval) = (dir.join("licence-train.jsonl"), dir.join("licence-eval.jsonl"));
    std::fs::write(&train, text.lines().take(12).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    std::fs::write(&eval, text.lines().skip(12).take(4).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let qa = [
        ("Q: What colour is a clear daytime sky?\nA:", " Blue."),
        ("Q: How many days are in a week?\nA:", " Seven."),
        ("Q: What is frozen water called?\nA:", " Ice."),
        ("Q: Which animal barks?\nA:", " A dog."),
    ];
    let yes_no = [
        ("Is fire hot? Answer yes or no:", " yes"),
        ("Is ice hot? Answer yes or no:", " no"),
        ("Do fish swim? Answer yes or no:", " yes"),
        ("Do stones sing? Answer yes or no:", " no"),
    ];
    let entry = |name: &str, data: &Path, eval: &Path, format: &str, score: &str| {
        format!(
            "[[tasks]]\nname = {name:?}\ndata = {:?}\neval = {:?}\nformat = {format:?}\nscore = {score:?}\n\n",
            data.display().to_string(),
            eval.display().to_string()
        )
    };
    entry("licence", &train, &eval, "text", "loss")
        + &entry(
            "qa",
            &pairs_jsonl(dir, "qa", &qa, 8),
            &pairs_jsonl(dir, "qa-eval", &qa, 4),
            "prompt_completion",
            "loss",
        )
        + &entry(
            "yesno",
            &pairs_jsonl(dir, "yesno", &yes_no, 8),
            &pairs_jsonl(dir, "yesno-eval", &yes_no, 4),
            "prompt_completion",
            "accuracy",
        )
}

/// The config text over `tasks` with LoRA on `model`, `[continual]` keys `continual`, written
/// to `dir/NAME.toml`; returns its path.
fn write_config(dir: &Path, name: &str, model: &Path, tasks: &str, continual: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
name = {model:?}

[adapter]
kind = "lora"
r = 4
alpha = 8.0
targets = ["q_proj", "v_proj"]

[data]
seq_len = 32

{tasks}

[continual]
{continual}

[multitask]
mixing = "round_robin"

[train]
max_steps = 2
batch_size = 2
lr = 1e-2
eval_batches = 2

[output]
dir = {out:?}
"#,
        model = model.display().to_string(),
        out = dir.join(name).display().to_string(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn small_model(dir: &Path) -> PathBuf {
    let path = dir.join("model");
    common::write_model_seeded(&path, &small_config(), 3);
    path
}

/// The modification time of every `summary.json` under `dir`.
fn summary_times(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(summary_times(&path));
        } else if path.file_name().is_some_and(|n| n == "summary.json") {
            out.push((path.clone(), std::fs::metadata(&path).unwrap().modified().unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn every_method_fills_its_matrix_matching_independent_scores_and_a_rerun_trains_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let tasks = task_entries(dir.path());
    let path = write_config(dir.path(), "run", &model, &tasks, "expand_blocks = 1");
    let cfg = ContinualConfig::load(&path, &[]).unwrap();
    let summary = continual::run(&cfg, &mut |_| {}).unwrap();
    let out = dir.path().join("run");

    // 4 sequential methods × 3 stages + one multitask run; every matrix of the right shape.
    assert_eq!(summary.trained_stages, 13);
    let names: Vec<&str> = summary.methods.iter().map(|m| m.method.name()).collect();
    assert_eq!(names, ["sequential_full", "sequential_lora", "per_task_lora", "block_expansion", "multitask"]);
    for m in &summary.methods {
        let rows = if m.method.name() == "multitask" { 1 } else { 3 };
        assert_eq!(m.r.len(), rows, "{m:?}");
        assert!(m.r.iter().all(|row| row.len() == 3 && row.iter().all(|x| x.is_finite())), "{m:?}");
        assert_eq!(m.metrics.is_some(), rows == 3);
    }
    let base: Vec<f64> = summary.tasks.iter().map(|t| t.base).collect();
    let method = |name: &str| summary.methods.iter().find(|m| m.method.name() == name).unwrap();

    // R[1][0] of sequential LoRA is the base model with stage 2's adapter, scored on task 0's
    // eval file by the plain pieces; stage 2 continued stage 1's adapter (they differ).
    let seq_lora = method("sequential_lora");
    let stage2 = out.join("sequential_lora/stage-2");
    let source = graft::assets::resolve_model(model.to_str().unwrap(), false).unwrap();
    let tok = graft::tokenizer::Tokenizer::from_source(&source).unwrap();
    let mut llama = graft::models::load::load_causal_lm(&source, &Default::default()).unwrap();
    graft::io::adapter::load_adapter(&stage2, &mut llama).unwrap();
    let (examples, _) =
        graft::data::load_examples(&dir.path().join("licence-eval.jsonl"), graft::data::DataFormat::Text, &tok, 32)
            .unwrap();
    let batches =
        graft::data::make_batches(&examples, 2, 32, false, tok.batch_pad_id(), &candle_core::Device::Cpu).unwrap();
    let loss = graft::recipes::parts::eval_loss(&llama, &batches[..2.min(batches.len())]).unwrap();
    assert!((seq_lora.r[1][0] - loss).abs() < 1e-9, "{} vs {loss}", seq_lora.r[1][0]);
    let factors = |stage: &str| std::fs::read(out.join(stage).join("adapter/adapter_model.safetensors")).unwrap();
    assert_ne!(factors("sequential_lora/stage-1"), factors("sequential_lora/stage-2"));
    let resolved = std::fs::read_to_string(out.join("sequential_lora/stage-3/config.resolved.toml")).unwrap();
    assert!(resolved.contains("from_run_adapter = \"keep\""), "{resolved}");

    // Per-task LoRA: the diagonal is each stage's own score, a trained task keeps it in every
    // later row, an untrained one has the base score.
    let per_task = method("per_task_lora");
    for i in 0..3 {
        let own: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("per_task_lora/stage-{}/scores.json", i + 1))).unwrap(),
        )
        .unwrap();
        assert_eq!(per_task.r[i][i], own[&summary.tasks[i].name].as_f64().unwrap());
        for j in 0..3 {
            let want = if j >= i { per_task.r[i][i] } else { base[i] };
            assert_eq!(per_task.r[j][i], want, "R[{j}][{i}]");
        }
    }
    // The accuracy column is a share of 4 examples.
    assert!(per_task.r[2][2] >= 0.0 && per_task.r[2][2] <= 1.0 && (per_task.r[2][2] * 4.0).fract() == 0.0);

    // Block expansion trains the grown block in every stage, and only it.
    let trainable = |stage: &str| -> u64 {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(stage).join("summary.json")).unwrap()).unwrap();
        s["trainable_params"].as_u64().unwrap()
    };
    assert_eq!(trainable("block_expansion/stage-1"), trainable("block_expansion/stage-3"));
    assert!(trainable("block_expansion/stage-1") < trainable("sequential_full/stage-1"));

    // The metrics are the formulas' on the matrix (forgetting and BWT of sequential full).
    let full = method("sequential_full");
    let dirs: Vec<Direction> = cfg.tasks.iter().map(|t| t.score.direction()).collect();
    let again = ScoreMatrix { r: full.r.clone(), base: Some(base.clone()), directions: dirs }.metrics().unwrap();
    assert_eq!(full.metrics.as_ref().unwrap(), &again);
    let bwt = ((full.r[2][0] - full.r[0][0]) + (full.r[2][1] - full.r[1][1])) / 2.0;
    assert!((again.bwt.unwrap() - bwt).abs() < 1e-12);
    assert!(out.join("summary.json").is_file());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("`yesno` (accuracy; base") && report.contains("## block_expansion"), "{report}");
    assert!(report.contains(&format!("| sequential_full | {:.4} |", full.average_final)), "{report}");

    // A rerun trains nothing and writes the same matrices.
    let stages =
        |out: &Path| -> Vec<_> { summary_times(out).into_iter().filter(|(p, _)| p.parent() != Some(out)).collect() };
    let before = stages(&out);
    assert_eq!(before.len(), 13);
    let rerun = continual::run(&cfg, &mut |_| {}).unwrap();
    assert_eq!(rerun.trained_stages, 0);
    assert_eq!(stages(&out), before);
    for (a, b) in summary.methods.iter().zip(&rerun.methods) {
        assert_eq!(a.r, b.r, "{}", a.method.name());
    }
}

#[test]
fn bad_input_is_refused_naming_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let tasks = task_entries(dir.path());
    let err = |tasks: &str, continual: &str| {
        let path = write_config(dir.path(), "bad", &model, tasks, continual);
        ContinualConfig::load(&path, &[]).unwrap_err().to_string()
    };
    let e = err(&tasks, "methods = [\"sequential_full\", \"replay\"]");
    assert!(e.contains("unknown variant `replay`") && e.contains("per_task_lora"), "{e}");
    let e = err("", "methods = [\"sequential_full\"]");
    assert!(e.contains("no task"), "{e}");
    let e = err(&tasks, "methods = []");
    assert!(e.contains("continual.methods") && e.contains("empty"), "{e}");
    let e = err(&tasks, "methods = [\"multitask\", \"multitask\"]");
    assert!(e.contains("`multitask` is listed twice"), "{e}");
    let missing = tasks.replace("qa-eval.jsonl", "qa-missing.jsonl");
    let e = err(&missing, "");
    assert!(e.contains("task `qa`") && e.contains("qa-missing.jsonl") && e.contains("does not exist"), "{e}");
    let no_eval = tasks.replace(&format!("eval = {:?}\n", dir.path().join("qa-eval.jsonl").display().to_string()), "");
    let e = err(&no_eval, "");
    assert!(e.contains("task `qa`") && e.contains("tasks.eval") && e.contains("required"), "{e}");
    let text_accuracy = tasks.replacen("score = \"loss\"", "score = \"accuracy\"", 1);
    let e = err(&text_accuracy, "");
    assert!(e.contains("task `licence`") && e.contains("label scoring"), "{e}");
    // One task has no backward transfer: asking for it is an error.
    let one = ScoreMatrix { r: vec![vec![0.5]], base: None, directions: vec![Direction::HigherIsBetter] };
    assert!(one.bwt().unwrap_err().to_string().contains("at least two tasks"));
}
