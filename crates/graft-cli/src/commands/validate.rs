//! `graft validate` and `graft preprocess`: check a training config and its data without
//! training, and show how samples are tokenized and supervised.

use anyhow::Result;
use graft::config::TrainConfig;
use graft::data;
use graft::recipes::data_build;
use graft::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// Check a training config and its data without training: the config parses, the model and
/// tokenizer load, every data line is valid, the adapter targets match. A `graft compare` config
/// (one with a `[task]` section or a `techniques` list) is checked too: it parses, its models
/// resolve and the task's corpus is fetched. With `--checkpoint`, check a run's checkpoints instead.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  graft validate configs/lora-chat.toml\n  graft validate configs/lora-chat.toml --set data.train=my.jsonl\n  graft validate configs/compare-sentiment.toml\n  graft validate --checkpoint runs/lora-chat\n\n\
A data path written dataset:NAME/FILE is built into the cache first (docs/data.md)."
)]
pub struct ValidateArgs {
    /// The run's config.
    #[arg(required_unless_present = "checkpoint")]
    pub config: Option<PathBuf>,
    /// Override one config key: section.key=value. Repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Instead of a config, verify every checkpoint of this run directory (the one `LATEST`
    /// names and every other complete one) against its checksums; exit code 7 if one is damaged.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "overrides"])]
    pub checkpoint: Option<PathBuf>,
    /// Print the findings as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Print tokenized samples of a config's training data with the supervised tokens marked `[[…]]`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  graft preprocess configs/lora-chat.toml --show 3")]
pub struct PreprocessArgs {
    /// The run's config.
    pub config: PathBuf,
    /// Override one config key: section.key=value. Repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// How many samples to show.
    #[arg(long, default_value_t = 3)]
    pub show: usize,
    /// Print the samples as one JSON object on stdout (ids and supervision flags).
    #[arg(long)]
    pub json: bool,
}

/// Runs `graft validate`.
pub fn validate(args: ValidateArgs) -> Result<()> {
    if let Some(dir) = &args.checkpoint {
        return checkpoints(dir, args.json);
    }
    let Some(config) = &args.config else { super::bail_input!("give a config file or --checkpoint RUN_DIR") };
    if graft::recipes::compare::is_compare_config(config)? {
        return validate_compare(config, &args);
    }
    if graft::config::continual::is_continual_config(config)? {
        return validate_continual(config, &args);
    }
    if graft::config::multitask::is_multitask_config(config)? {
        return validate_multitask(config, &args);
    }
    if graft::recipes::games::is_games_config(config)? {
        let cfg = graft::recipes::games::GamesConfig::load(config, &args.overrides)?;
        let env = cfg.env.make(0)?;
        let (label, obs, actions) = (cfg.env.label(), env.observation_size(), env.actions());
        let algorithm = serde_json::to_value(cfg.agent.algorithm)?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "ok": true, "kind": "games", "env": label, "algorithm": algorithm, "observations": obs, "actions": actions })
            );
        } else {
            println!("ok: games config, {label}: {obs} observations, {actions} actions, {algorithm}");
        }
        return Ok(());
    }
    if graft::recipes::meta::config::is_meta_config(config)? {
        let cfg = graft::recipes::meta::config::MetaConfig::load(config, &args.overrides)?;
        let check = graft::recipes::meta::check(&cfg)?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "ok": true, "kind": "meta", "examples": check.examples, "classes": check.classes })
            );
        } else {
            println!("ok: meta config, {}", check.note);
        }
        return Ok(());
    }
    if graft::recipes::image_train::config::is_image_train_config(config)? {
        let cfg = graft::recipes::image_train::config::ImageTrainConfig::load(config, &args.overrides)?;
        let (train, test, classes) = graft::recipes::image_train::check(&cfg)?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "ok": true, "kind": "vision", "train_examples": train, "test_examples": test, "classes": classes })
            );
        } else {
            println!("ok: vision config, {train} labelled training images, {test} test images, {classes} classes");
        }
        return Ok(());
    }
    if graft::recipes::mlm::config::is_mlm_config(config)? {
        let cfg = graft::recipes::mlm::MlmConfig::load(config, &args.overrides)?;
        let (train, eval) = data_build::data_files(&cfg.data, &mut |n| eprintln!("{n}"))?;
        let texts = graft::recipes::mlm::corpus::read_corpus(&train)?.len();
        if args.json {
            let kind = if cfg.simcse.is_some() { "simcse" } else { "mlm" };
            println!("{}", serde_json::json!({ "ok": true, "kind": kind, "train_texts": texts, "eval": eval }));
        } else {
            let what = if cfg.simcse.is_some() { "SimCSE" } else { "masked-LM" };
            println!("ok: {what} config, {texts} training texts");
        }
        return Ok(());
    }
    let cfg = if graft::config::distill::is_distill_config(config)? {
        // A distillation config: its teacher loads and shares the student's tokenizer (any
        // tokenizer with `distill.loss = "uld"`); the
        // student's part is checked like any training config below.
        let distill = graft::config::distill::DistillConfig::load(config, &args.overrides)?;
        let teacher = graft::recipes::distill::load_teacher(&distill)?;
        let student = distill.student();
        let tok = graft::tokenizer::Tokenizer::from_source(&graft::assets::resolve_model(&student.model.name, false)?)?;
        graft::recipes::distill::check_tokenizers(&distill, &teacher.tokenizer, &tok)?;
        student
    } else {
        TrainConfig::load(config, &args.overrides)?
    };
    eprintln!("config ok; loading the model and checking adapter targets");
    let tm = graft::recipes::parts::build_model(&cfg)?;
    let trainable: usize = tm.vars.iter().map(|(_, v)| v.elem_count()).sum();
    let (train, eval) = data_reports(&cfg, &tm.tokenizer)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "ok": true, "kind": "train", "trainable_params": trainable, "trainable_tensors": tm.vars.len(), "train": train, "eval": eval })
        );
    } else {
        println!("ok: {} trainable parameters in {} tensors", trainable, tm.vars.len());
        println!(
            "train: {} samples, {} tokens, {} supervised, {} truncated",
            train.n_examples, train.n_tokens, train.n_supervised_tokens, train.n_truncated
        );
        if let Some(e) = eval {
            println!("eval: {} samples, {} tokens, {} supervised", e.n_examples, e.n_tokens, e.n_supervised_tokens);
        }
    }
    Ok(())
}

/// The tokenization reports of a training config's data: its train file and its eval file (when
/// it has one), built first when they are `dataset:` references.
fn data_reports(cfg: &TrainConfig, tok: &Tokenizer) -> Result<(data::LoadReport, Option<data::LoadReport>)> {
    let (train_path, eval_path) = data_build::data_files(&cfg.data, &mut |n| eprintln!("{n}"))?;
    let (_, train) = data::load_examples(&train_path, cfg.data.format, tok, cfg.data.seq_len)?;
    let eval = match &eval_path {
        Some(p) => Some(data::load_examples(p, cfg.data.format, tok, cfg.data.seq_len)?.1),
        None => None,
    };
    Ok((train, eval))
}

/// `graft validate` of a continual-learning config: it loads and validates, the base model's
/// tokenizer loads, and every task's training and eval data tokenize.
fn validate_continual(config: &Path, args: &ValidateArgs) -> Result<()> {
    let cfg = graft::config::continual::ContinualConfig::load(config, &args.overrides)?;
    let tok = Tokenizer::from_source(&graft::assets::resolve_model(&cfg.model.name, false)?)?;
    let mut tasks = serde_json::Map::new();
    for (i, task) in cfg.tasks.iter().enumerate() {
        let (train, eval) = data_reports(&cfg.task_config(i, &cfg.output.dir), &tok)?;
        if !args.json {
            println!("task {}: {} train samples, {:?} scored", task.name, train.n_examples, task.score);
        }
        let eval = eval.map(|e| e.n_examples);
        tasks.insert(
            task.name.clone(),
            serde_json::json!({ "train": train.n_examples, "eval": eval, "score": task.score }),
        );
    }
    let methods: Vec<&str> = cfg.continual.methods.iter().map(|m| m.name()).collect();
    if args.json {
        println!("{}", serde_json::json!({ "ok": true, "kind": "continual", "tasks": tasks, "methods": methods }));
    } else {
        println!("ok: continual config, {} tasks, methods {}", cfg.tasks.len(), methods.join(", "));
    }
    Ok(())
}

/// `graft validate` of a multitask config: it loads and validates, the model loads with its
/// adapter, and every task's data tokenizes (a task without training examples is refused).
fn validate_multitask(config: &Path, args: &ValidateArgs) -> Result<()> {
    let cfg = graft::config::multitask::MultitaskConfig::load(config, &args.overrides)?;
    eprintln!("config ok; loading the model and checking adapter targets");
    let tm = graft::recipes::parts::build_model(&cfg.task_config(0)?)?;
    let trainable: usize = tm.vars.iter().map(|(_, v)| v.elem_count()).sum();
    let mut tasks = serde_json::Map::new();
    for (i, task) in cfg.tasks.iter().enumerate() {
        let (train, eval) = data_reports(&cfg.task_config(i)?, &tm.tokenizer)?;
        if train.n_examples == 0 {
            super::bail_input!("task `{}`: {} holds no training example", task.name, task.data.display());
        }
        if !args.json {
            println!(
                "task {}: {} train samples, {} supervised tokens",
                task.name, train.n_examples, train.n_supervised_tokens
            );
        }
        tasks.insert(task.name.clone(), serde_json::json!({ "train": train, "eval": eval }));
    }
    if args.json {
        let json =
            serde_json::json!({ "ok": true, "kind": "multitask", "trainable_params": trainable, "tasks": tasks });
        println!("{json}");
    } else {
        println!("ok: {} tasks, {} trainable parameters in {} tensors", cfg.tasks.len(), trainable, tm.vars.len());
    }
    Ok(())
}

/// `graft validate` of a compare config: it loads and validates, the decoder and (when
/// `encoder_probe` runs) the encoder resolve, the decoder's tokenizer loads, and the task's
/// corpus is in the cache.
fn validate_compare(config: &Path, args: &ValidateArgs) -> Result<()> {
    use graft::recipes::compare::{CompareConfig, Technique};
    let cfg = CompareConfig::load(config, &args.overrides)?;
    eprintln!("compare config ok; resolving the models and the task's corpus");
    let source = graft::assets::resolve_model(&cfg.model.name, false)?;
    Tokenizer::from_source(&source)?;
    if cfg.techniques.contains(&Technique::EncoderProbe) {
        graft::assets::resolve_model(&cfg.probe.encoder, false)?;
    }
    graft::assets::ensure("tweets", false)?;
    let techniques: Vec<&str> = cfg.techniques.iter().map(|t| t.name()).collect();
    if args.json {
        println!("{}", serde_json::json!({ "ok": true, "kind": "compare", "techniques": techniques }));
    } else {
        println!("ok: compare config, {} techniques: {}", techniques.len(), techniques.join(", "));
    }
    Ok(())
}

/// Verifies the checkpoints of `run_dir` and lists them with their steps.
fn checkpoints(run_dir: &Path, json: bool) -> Result<()> {
    let found = graft::train::checkpoint::verify_all(run_dir)?;
    if json {
        let list: Vec<_> = found.iter().map(|(dir, step)| serde_json::json!({ "path": dir, "step": step })).collect();
        println!("{}", serde_json::json!({ "ok": true, "checkpoints": list }));
    } else {
        for (dir, step) in &found {
            println!("ok: {} (step {step})", dir.display());
        }
    }
    Ok(())
}

/// Runs `graft preprocess`.
pub fn preprocess(args: PreprocessArgs) -> Result<()> {
    let cfg = TrainConfig::load(&args.config, &args.overrides)?;
    let (train_path, _) = data_build::data_files(&cfg.data, &mut |n| eprintln!("{n}"))?;
    let source = graft::assets::resolve_model(&cfg.model.name, false)?;
    let tok = Tokenizer::from_source(&source)?;
    let (examples, report) = data::load_examples(&train_path, cfg.data.format, &tok, cfg.data.seq_len)?;
    let shown = &examples[..args.show.min(examples.len())];
    if args.json {
        let samples: Vec<_> =
            shown.iter().map(|e| serde_json::json!({ "ids": e.ids, "supervised": e.supervised })).collect();
        println!("{}", serde_json::json!({ "report": report, "samples": samples }));
        return Ok(());
    }
    for (i, e) in shown.iter().enumerate() {
        println!("--- sample {i} ({} tokens, {} supervised)", e.ids.len(), e.supervised.iter().filter(|&&s| s).count());
        println!("{}", data::describe_example(e, &tok));
    }
    eprintln!("{} samples in total; supervised tokens are shown as [[…]]", report.n_examples);
    Ok(())
}
