//! Fine-tuning recipe (LoRA, QLoRA, full, freeze, prompt and prefix tuning): build the parts, measure the base model,
//! run the training loop with evaluation and checkpoints, write the adapter / model, metrics
//! and summary into the run directory. Resumes exactly from the last good checkpoint.

use super::parts::{build_model, build_optimizer, causal_lm_loss, eval_loss, TrainableModel};
use crate::config::TrainConfig;
use crate::data::{self, Batch, Example};
use crate::train::checkpoint::{self, LoopState};
use crate::train::schedule::Schedule;
use crate::train::step::accumulate_and_step;
use crate::{GraftError, Result};
use candle_core::Device;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Progress reported while a run goes (the CLI turns these into a progress bar and logs).
#[derive(Debug, Clone)]
pub enum Event {
    /// A human-readable note (data statistics, resume point, ...).
    Note(String),
    /// The run starts: total optimizer steps.
    Start {
        /// Steps the run will reach.
        total_steps: u64,
        /// Step it starts from (non-zero on resume).
        from_step: u64,
    },
    /// One optimizer step finished.
    Step(StepRecord),
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// Optimizer step (1-based).
    pub step: u64,
    /// Mean training loss per supervised token of this step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens (all positions of the step's batches) per second.
    pub tokens_per_s: f64,
    /// Evaluation loss, on steps where evaluation ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
}

/// `summary.json` of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Evaluation loss of the model before training.
    pub base_eval_loss: f64,
    /// Perplexity before training.
    pub base_eval_ppl: f64,
    /// Evaluation loss after training.
    pub final_eval_loss: f64,
    /// Perplexity after training.
    pub final_eval_ppl: f64,
    /// Optimizer steps done.
    pub steps: u64,
    /// Supervised tokens trained on.
    pub tokens: u64,
    /// Training wall time in seconds (summed over every part of an interrupted and resumed run).
    pub wall_time_s: f64,
    /// Peak resident memory of the process, MB.
    pub peak_rss_mb: Option<f64>,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Where the adapter (PEFT format) or full model was written.
    pub output: PathBuf,
}

/// Keys a resumed run may change without invalidating its checkpoint.
const RESUME_SAFE_KEYS: &[&str] = &["train.eval_every", "train.save_every", "train.eval_batches", "output.dir"];

/// An exclusive lock on a run directory, held for the life of the run.
struct RunLock(#[allow(dead_code)] File);

fn lock_run_dir(dir: &Path) -> Result<RunLock> {
    std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| GraftError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock(file)),
        Err(_) => Err(GraftError::RunDirLocked { path: dir.to_path_buf() }),
    }
}

/// The examples of one epoch, shuffled by `(seed, epoch)`, as micro-batches.
struct EpochBatches {
    epoch: u64,
    batches: Vec<Batch>,
}

fn epoch_batches(cfg: &TrainConfig, train: &[Example], epoch: u64, pad: u32, device: &Device) -> Result<EpochBatches> {
    let mut ex = train.to_vec();
    data::shuffle(&mut ex, cfg.train.seed, epoch);
    let batches = data::make_batches(&ex, cfg.train.batch_size, cfg.data.seq_len, cfg.data.packing, pad, device)?;
    Ok(EpochBatches { epoch, batches })
}

/// Drops the lines of `metrics.jsonl` logged after `step` (by a run killed after its last
/// checkpoint), so a resumed run's log has each step once.
fn keep_metrics_through(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).map_err(|e| GraftError::io(path, e))
}

/// Runs the fine-tuning described by `cfg`; with `resume`, continues from the newest good
/// checkpoint in `cfg.output.dir`.
pub fn run(cfg: &TrainConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<Summary> {
    run_keeping_model(cfg, resume, on_event).map(|(summary, _)| summary)
}

/// [`run`], also handing back the trained model (adapters attached, in evaluation mode), for
/// callers that score it right away instead of loading what was written.
pub fn run_keeping_model(
    cfg: &TrainConfig,
    resume: bool,
    on_event: &mut dyn FnMut(Event),
) -> Result<(Summary, crate::models::llama::Llama)> {
    cfg.validate()?;
    let (train_path, eval_path) = super::data_build::data_files(&cfg.data, &mut |n| on_event(Event::Note(n)))?;
    let out = cfg.output.dir.clone();
    let _lock = lock_run_dir(&out)?;
    let TrainableModel { model, tokenizer, lora, prompt, vars, .. } = build_model(cfg)?;
    let device = crate::models::Model::device(&model).clone();
    let pad = tokenizer.pad_id().or(tokenizer.eos_id()).unwrap_or(0);

    // Data.
    let (train_ex, report) = data::load_examples(&train_path, cfg.data.format, &tokenizer, cfg.data.seq_len)?;
    on_event(Event::Note(format!(
        "train data: {} examples, {} tokens ({} supervised), {} truncated to {} tokens",
        report.n_examples, report.n_tokens, report.n_supervised_tokens, report.n_truncated, cfg.data.seq_len
    )));
    let (train_ex, eval_ex) = match &eval_path {
        Some(path) => (train_ex, data::load_examples(path, cfg.data.format, &tokenizer, cfg.data.seq_len)?.0),
        None => data::split_train_eval(train_ex, cfg.data.eval_fraction, cfg.train.seed),
    };
    if train_ex.is_empty() || eval_ex.is_empty() {
        return Err(GraftError::Input("the train/eval split left one side empty: add data or set data.eval".into()));
    }
    let mut eval_batches = data::make_batches(&eval_ex, cfg.train.batch_size, cfg.data.seq_len, false, pad, &device)?;
    if cfg.train.eval_batches > 0 {
        eval_batches.truncate(cfg.train.eval_batches);
    }
    let per_epoch = epoch_batches(cfg, &train_ex, 0, pad, &device)?.batches.len() as u64;
    let accum = cfg.train.grad_accum as u64;
    let total_steps = cfg.train.max_steps.unwrap_or_else(|| (cfg.train.epochs * per_epoch).div_ceil(accum));
    let schedule =
        Schedule { kind: cfg.train.schedule, peak: cfg.train.lr, warmup: cfg.train.warmup_steps, total: total_steps };
    let trainable_params: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let mut optimizer = build_optimizer(cfg, vars)?;
    let config_toml = toml::to_string(cfg).map_err(|e| GraftError::Input(format!("config: {e}")))?;

    // Resume or start.
    let mut state = LoopState {
        step: 0,
        micro_batches_done: 0,
        tokens_seen: 0,
        config_toml: config_toml.clone(),
        base_eval_loss: None,
        elapsed_s: 0.0,
    };
    if resume {
        let ckpt = checkpoint::load_latest(&out, &device, |w| on_event(Event::Note(w)))?.ok_or_else(|| {
            checkpoint::damaged(&out, "none complete to resume from (run without --resume to start over)")
        })?;
        let saved: TrainConfig = toml::from_str(&ckpt.state.config_toml)
            .map_err(|e| checkpoint::damaged(&ckpt.dir, format!("its config does not parse: {e}")))?;
        let changed: Vec<String> =
            saved.differing_keys(cfg).into_iter().filter(|k| !RESUME_SAFE_KEYS.contains(&k.as_str())).collect();
        if !changed.is_empty() {
            return Err(GraftError::Input(format!(
                "cannot resume {}: the config differs from the checkpoint's in {}",
                out.display(),
                changed.join(", ")
            )));
        }
        for (name, var) in optimizer.params() {
            let t = ckpt.weights.get(name).ok_or_else(|| checkpoint::damaged(&ckpt.dir, format!("lacks `{name}`")))?;
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        optimizer.load_state(&ckpt.optimizer).map_err(|e| checkpoint::damaged(&ckpt.dir, e.to_string()))?;
        on_event(Event::Note(format!("resuming from {} (step {})", ckpt.dir.display(), ckpt.state.step)));
        keep_metrics_through(&out.join("metrics.jsonl"), ckpt.state.step)?;
        state = ckpt.state;
    } else {
        // A fresh run replaces earlier metrics.
        let _ = std::fs::remove_file(out.join("metrics.jsonl"));
    }
    // Written only once the run is accepted: a refused resume leaves the run's config as it was.
    let resolved = out.join("config.resolved.toml");
    std::fs::write(&resolved, &config_toml).map_err(|e| GraftError::io(&resolved, e))?;
    let set_training = |on: bool| {
        if let Some(l) = &lora {
            l.clock.set_training(on);
        }
    };
    set_training(false);
    let base_eval_loss = match state.base_eval_loss {
        Some(l) => l,
        None => {
            on_event(Event::Note("evaluating the base model".into()));
            let l = eval_loss(&model, &eval_batches)?;
            state.base_eval_loss = Some(l);
            l
        }
    };

    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| GraftError::io(&metrics_path, e))?;
    on_event(Event::Start { total_steps, from_step: state.step });
    let process_start = Instant::now();
    let elapsed_before = state.elapsed_s;
    let resumed_at = state.step;
    let mut epoch = epoch_batches(cfg, &train_ex, state.micro_batches_done / per_epoch, pad, &device)?;
    let save = |state: &LoopState, optimizer: &crate::train::optim::Optimizer| -> Result<()> {
        let weights: Vec<_> = optimizer.params().iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        checkpoint::save(&out, &weights, &optimizer.state()?, state, 2)?;
        Ok(())
    };
    while state.step < total_steps {
        let t0 = Instant::now();
        let first = state.micro_batches_done;
        let mut step_tokens = 0usize;
        let mut micro = Vec::with_capacity(cfg.train.grad_accum);
        for k in 0..accum {
            let global = first + k;
            if global / per_epoch != epoch.epoch {
                epoch = epoch_batches(cfg, &train_ex, global / per_epoch, pad, &device)?;
            }
            let b = epoch.batches[(global % per_epoch) as usize].clone();
            step_tokens += b.n_tokens;
            micro.push(b);
        }
        set_training(true);
        let lr = schedule.lr(state.step);
        let clock = lora.as_ref().map(|l| l.clock.clone());
        let stats = accumulate_and_step(
            state.step + 1,
            &mut optimizer,
            micro.len(),
            |i| {
                if let Some(c) = &clock {
                    c.set_step(first + i as u64);
                }
                causal_lm_loss(&model, &micro[i])
            },
            cfg.train.max_grad_norm,
            lr,
        )?;
        set_training(false);
        state.step += 1;
        state.micro_batches_done += accum;
        state.tokens_seen += stats.targets as u64;
        let evaluate =
            cfg.train.eval_every > 0 && state.step.is_multiple_of(cfg.train.eval_every) && state.step < total_steps;
        let eval = if evaluate { Some(eval_loss(&model, &eval_batches)?) } else { None };
        let record = StepRecord {
            step: state.step,
            loss: stats.loss,
            lr,
            grad_norm: stats.grad_norm,
            tokens_per_s: step_tokens as f64 / t0.elapsed().as_secs_f64(),
            eval_loss: eval,
        };
        writeln!(metrics, "{}", serde_json::to_string(&record)?).map_err(|e| GraftError::io(&metrics_path, e))?;
        on_event(Event::Step(record));
        state.elapsed_s = elapsed_before + process_start.elapsed().as_secs_f64();
        if cfg.train.save_every > 0 && state.step.is_multiple_of(cfg.train.save_every) && state.step < total_steps {
            save(&state, &optimizer)?;
        }
    }
    state.elapsed_s = elapsed_before + process_start.elapsed().as_secs_f64();
    // A run resumed from its final checkpoint (killed while writing its outputs) keeps it:
    // saving the same step again would delete the folder `LATEST` names before its copy is in.
    if state.step > resumed_at {
        save(&state, &optimizer)?;
    }
    let final_eval_loss = eval_loss(&model, &eval_batches)?;

    let output = match (&lora, &prompt) {
        (Some(set), _) => {
            let dir = out.join("adapter");
            crate::io::peft::save_lora(set, &dir, &cfg.model.name)?;
            dir
        }
        (None, Some(adapter)) => {
            let dir = out.join("adapter");
            crate::io::peft_prompt::save_prompt(adapter, &model, &dir, &cfg.model.name)?;
            dir
        }
        (None, None) => {
            let dir = out.join("model");
            crate::io::hf_folder::write_llama_folder(&model, &tokenizer, &dir, crate::models::Model::dtype(&model))?;
            dir
        }
    };
    let summary = Summary {
        base_eval_loss,
        base_eval_ppl: base_eval_loss.exp(),
        final_eval_loss,
        final_eval_ppl: final_eval_loss.exp(),
        steps: state.step,
        tokens: state.tokens_seen,
        wall_time_s: state.elapsed_s,
        peak_rss_mb: crate::bench::memory::peak_rss_bytes().map(|b| b as f64 / 1e6),
        trainable_params,
        output,
    };
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?).map_err(|e| GraftError::io(&path, e))?;
    Ok((summary, model))
}
