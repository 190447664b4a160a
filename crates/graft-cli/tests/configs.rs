//! Every file in `configs/` runs as shipped: `graft validate` accepts it unchanged (building the
//! data it names on first use, loading the default model), and one optimizer step of it trains
//! with overrides to a small decoder and short sequences (the comparison config: every technique
//! at one step). The help texts and docs only name configs that exist.
//!
//! The summarization and QA configs build their data from the AppStream metadata that
//! `apt-get update` writes; without it they are skipped with a note, except under CI (`CI=true`),
//! where that is a failure.

mod common;

use graft::models::llama::LlamaConfig;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn graft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft")).args(args).output().unwrap()
}

/// Runs graft, fails the test with its stderr unless it succeeds, and parses its `--json` stdout.
fn graft_json(args: &[&str]) -> serde_json::Value {
    let out = graft(args);
    assert!(out.status.success(), "graft {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("graft {args:?}: stdout is not JSON: {e}"))
}

/// The shipped configs, sorted.
fn shipped_configs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// Whether a config can run here: one that needs the AppStream metadata is skipped when the
/// machine has none, unless under CI, where the metadata is part of the setup.
fn runnable(config: &Path) -> bool {
    if !std::fs::read_to_string(config).unwrap().contains("dataset:appstream/") {
        return true;
    }
    let Err(e) = graft::datasets::appstream::default_files() else { return true };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} needs the AppStream metadata and this CI machine has none: {e}\n\
             The CI setup must run `apt-get update` before the tests.",
            config.display()
        );
    }
    eprintln!("skipped {}: {e}", config.display());
    false
}

/// A decoder with the default model's depth (30 layers, so patterns like `layers.29.mlp.*`
/// match) and tokenizer, but hidden size 64: one training step costs little.
fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny-model");
    common::write_model(&path, &LlamaConfig { num_hidden_layers: 30, ..common::small_config() });
    path
}

#[test]
fn every_shipped_config_validates_and_trains_one_step() {
    let configs = shipped_configs();
    assert!(configs.len() >= 9, "configs/ lists {configs:?}");
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let model = model.to_str().unwrap();
    for config in configs.iter().filter(|c| runnable(c)) {
        let name = config.file_stem().unwrap().to_str().unwrap();
        let path = config.to_str().unwrap();
        // A later stage (`model.from_run`) starts from the earlier stage's run of this test,
        // written under the same folder name (its config sorts first).
        let from_run = graft::config::TrainConfig::load(config, &[]).ok().and_then(|c| c.model.from_run);
        let from_run_set = from_run.map(|p| format!("model.from_run={:?}", dir.path().join(p.file_name().unwrap())));
        let mut validate_args = vec!["validate", path, "--json"];
        if let Some(set) = &from_run_set {
            validate_args.extend(["--set", set]);
        }
        let checked = graft_json(&validate_args);
        assert_eq!(checked["ok"], true, "{name}: {checked}");

        let out = dir.path().join(name);
        let out_set = format!("output.dir={:?}", out.to_str().unwrap());
        if graft::recipes::compare::is_compare_config(config).unwrap() {
            let report = graft_json(&[
                "compare",
                path,
                "--set",
                &format!("model.name={model:?}"),
                "--set",
                "task.n_train=12",
                "--set",
                "task.n_test=6",
                "--set",
                "train.steps=1",
                "--set",
                "train.batch_size=4",
                "--set",
                "probe.head.epochs=1",
                "--set",
                "learning_curve.fractions=[]",
                "--set",
                &out_set,
                "--json",
            ]);
            let techniques = checked["techniques"].as_array().unwrap();
            assert_eq!(report["rows"].as_array().unwrap().len(), techniques.len(), "{name}");
            continue;
        }
        if graft::recipes::image_train::config::is_image_train_config(config).unwrap() {
            // A few labelled images at 32 x 32, one epoch, scored on a few test images.
            let mut args = vec!["vision", "train", path, "--set", "data.label_fraction=0.0005"];
            args.extend(["--set", "data.eval_limit=20", "--set", "head.epochs=1", "--set", "input.resize=32"]);
            args.extend(["--set", "input.crop=32", "--set", &out_set, "--json"]);
            let summary = graft_json(&args);
            assert_eq!(checked["kind"], "vision", "{name}: {checked}");
            assert!(checked["train_examples"].as_u64().unwrap() >= 10, "{name}: {checked}");
            assert_eq!(summary["train_examples"], 30, "{name}: three of each class's images: {summary}");
            assert_eq!(summary["test_examples"], 20, "{name}: {summary}");
            assert!(out.join("summary.json").is_file() && out.join("head.safetensors").is_file(), "{name}");
            continue;
        }
        if graft::recipes::mlm::config::is_mlm_config(config).unwrap() {
            // A `[simcse]` config runs `graft pretrain-simcse`, the others `graft pretrain-mlm`.
            let simcse = graft::recipes::mlm::MlmConfig::load(config, &[]).unwrap().simcse.is_some();
            let command = if simcse { "pretrain-simcse" } else { "pretrain-mlm" };
            let mut args = vec![command, path, "--set", "data.seq_len=32", "--set", "train.max_steps=1"];
            args.extend(["--set", "train.batch_size=2", "--set", "train.eval_batches=1", "--set", &out_set, "--json"]);
            let summary = graft_json(&args);
            assert_eq!(summary["steps"], 1, "{name}: {summary}");
            assert!(summary["final_eval_loss"].as_f64().unwrap().is_finite(), "{name}: {summary}");
            assert!(PathBuf::from(summary["output"].as_str().unwrap()).join("config.json").is_file(), "{name}");
            continue;
        }
        if graft::config::continual::is_continual_config(config).unwrap() {
            // Every method of the sequence, one step a stage, on the small decoder.
            let mut args = vec!["continual", path, "--set", "data.seq_len=128", "--set", "train.max_steps=1"];
            args.extend(["--set", "train.batch_size=2", "--set", "train.eval_batches=1"]);
            let model_set = format!("model.name={model:?}");
            args.extend(["--set", &model_set, "--set", &out_set, "--json"]);
            let summary = graft_json(&args);
            let tasks = summary["tasks"].as_array().unwrap().len();
            let methods = summary["methods"].as_array().unwrap();
            assert_eq!(methods.len(), checked["methods"].as_array().unwrap().len(), "{name}: {summary}");
            for m in methods {
                let rows = m["r"].as_array().unwrap();
                assert_eq!(rows.len(), if m["method"] == "multitask" { 1 } else { tasks }, "{name}: {m}");
                for row in rows {
                    let row = row.as_array().unwrap();
                    assert_eq!(row.len(), tasks, "{name}: {m}");
                    assert!(row.iter().all(|x| x.as_f64().unwrap().is_finite()), "{name}: {m}");
                }
            }
            continue;
        }
        if graft::recipes::games::is_games_config(config).unwrap() {
            // One short PPO update on the config's variant.
            let mut args = vec!["games", "train", path, "--set", "ppo.updates=1", "--set", "ppo.steps_per_update=64"];
            args.extend(["--set", "ppo.epochs=1", "--set", "ppo.minibatches=2", "--set", &out_set, "--json"]);
            let summary = graft_json(&args);
            assert_eq!(checked["kind"], "games", "{name}: {checked}");
            assert_eq!(summary["updates"], 1, "{name}: {summary}");
            assert!(out.join("policy.safetensors").is_file(), "{name}");
            continue;
        }
        if graft::recipes::meta::config::is_meta_config(config).unwrap() {
            // Validated above (data, classes, splits, episode shape); `graft meta` runs end to
            // end in tests/meta.rs on a small file, embedding every AppStream description costs
            // too much here.
            assert_eq!(checked["kind"], "meta", "{name}: {checked}");
            continue;
        }
        if graft::config::multitask::is_multitask_config(config).unwrap() {
            let mut args = vec!["multitask", path, "--set", "data.seq_len=128", "--set", "train.max_steps=1"];
            args.extend([
                "--set",
                "train.batch_size=2",
                "--set",
                "train.grad_accum=1",
                "--set",
                "train.eval_batches=1",
            ]);
            let model_set = format!("model.name={model:?}");
            args.extend(["--set", &model_set, "--set", &out_set, "--json"]);
            let summary = graft_json(&args);
            assert_eq!(summary["steps"], 1, "{name}: {summary}");
            let tasks = summary["tasks"].as_object().unwrap();
            assert_eq!(tasks.len(), checked["tasks"].as_object().unwrap().len(), "{name}: {summary}");
            assert!(tasks.values().all(|t| t["eval_loss"].as_f64().unwrap().is_finite()), "{name}: {summary}");
            assert!(PathBuf::from(summary["output"].as_str().unwrap()).join("adapter_config.json").is_file(), "{name}");
            continue;
        }
        // A distillation config runs `graft distill`, its teacher also the small decoder.
        let distill = graft::config::distill::is_distill_config(config).unwrap();
        let cfg = match distill {
            true => graft::config::distill::DistillConfig::load(config, &[]).unwrap().student(),
            false => graft::config::TrainConfig::load(config, &[]).unwrap(),
        };
        // QLoRA needs a quantized GGUF base: its step runs on the default model itself.
        let model_set = format!("model.name={model:?}");
        let teacher_set = format!("teacher.model={model:?}");
        let command = if distill { "distill" } else { "train" };
        let mut args = vec![command, path, "--set", "data.seq_len=128", "--set", "train.max_steps=1"];
        if distill {
            args.extend(["--set", &teacher_set]);
        }
        args.extend(["--set", "train.batch_size=2", "--set", "train.grad_accum=1", "--set", "train.eval_batches=1"]);
        args.extend(["--set", &out_set, "--json"]);
        if let Some(set) = &from_run_set {
            args.extend(["--set", set]);
        }
        if cfg.adapter.kind != graft::config::AdapterKind::Qlora {
            args.extend(["--set", &model_set]);
        }
        let summary = graft_json(&args);
        assert_eq!(summary["steps"], 1, "{name}: {summary}");
        assert!(summary["final_eval_loss"].as_f64().unwrap().is_finite(), "{name}: {summary}");
        let written = PathBuf::from(summary["output"].as_str().unwrap());
        assert!(written.join("adapter_config.json").is_file() || written.join("config.json").is_file(), "{name}");
    }
}

#[test]
fn help_and_docs_name_only_configs_that_exist() {
    let mut texts: Vec<(String, String)> = Vec::new();
    for cmd in ["train", "distill", "multitask", "continual", "validate", "preprocess", "compare"] {
        let out = graft(&[cmd, "--help"]);
        texts.push((format!("graft {cmd} --help"), String::from_utf8(out.stdout).unwrap()));
    }
    let mut docs = vec![repo().join("README.md")];
    docs.extend(std::fs::read_dir(repo().join("docs")).unwrap().map(|e| e.unwrap().path()));
    docs.extend(shipped_configs());
    for doc in docs.iter().filter(|p| p.extension().is_some_and(|x| x == "md" || x == "toml")) {
        texts.push((doc.display().to_string(), std::fs::read_to_string(doc).unwrap()));
    }
    let mut named = 0;
    for (source, text) in &texts {
        for (at, _) in text.match_indices("configs/") {
            let tail = &text[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || "/-_.".contains(c))).unwrap_or(tail.len());
            let mention = tail[..end].trim_end_matches('.');
            if mention.ends_with(".toml") {
                assert!(repo().join(mention).is_file(), "{source} names {mention}, which does not exist");
                named += 1;
            }
        }
    }
    assert!(named > 10, "only {named} config mentions found");
}

/// `graft data build tweets --out DIR` writes the very files a `dataset:tweets/FILE` reference
/// reads (built into the cache), in the formats the table gives; options change the split.
#[test]
fn data_build_writes_the_files_a_dataset_reference_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tweets");
    let report = graft_json(&["data", "build", "tweets", "--out", out.to_str().unwrap(), "--json"]);
    let dataset = graft::data::source::built_dataset("tweets").unwrap();
    for file in dataset.files {
        let reference = PathBuf::from(format!("dataset:tweets/{}", file.name));
        let cached = graft::recipes::data_build::resolve(&reference, &mut |_| {}).unwrap();
        let built = std::fs::read_to_string(out.join(file.name)).unwrap();
        assert!(std::fs::read_to_string(&cached).unwrap() == built, "{} differs from {}", file.name, cached.display());
        let n = if file.name.contains(".train.") { 2000 } else { 500 };
        assert_eq!(report["files"][file.name], n, "{}", file.name);
        assert_eq!(built.lines().count(), n, "{}", file.name);
    }
    let first = |name: &str| -> serde_json::Value {
        serde_json::from_str(std::fs::read_to_string(out.join(name)).unwrap().lines().next().unwrap()).unwrap()
    };
    let chat = first("chat.train.jsonl");
    let answer = chat["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(answer["role"], "assistant");
    let alpaca = first("alpaca.train.jsonl");
    assert_eq!(alpaca["output"], answer["content"], "the same tweet, labelled the same, comes first in both");
    assert!(chat["messages"][1]["content"].as_str().unwrap().ends_with(alpaca["input"].as_str().unwrap()));
    assert_eq!(first("text.train.jsonl")["text"], alpaca["input"]);

    let small = dir.path().join("small");
    let args = ["data", "build", "tweets", "--out", small.to_str().unwrap(), "--train", "20", "--test", "10", "--json"];
    let report = graft_json(&args);
    assert_eq!(
        (report["files"]["text.train.jsonl"].as_u64(), report["files"]["chat.test.jsonl"].as_u64()),
        (Some(20), Some(10))
    );
    let help = graft(&["data", "build", "tweets", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Example"));
}
