//! Fine-tuning recipe (LoRA, QLoRA, full, freeze, prompt and prefix tuning): build the parts, run
//! the causal-LM objective on the trainer (evaluation before, during and after, checkpoints,
//! exact resume), write the adapter / model, metrics and summary into the run directory.

use super::parts::{build_model, eval_loss, optimizer_kind, TrainableModel};
use crate::adapters::lora::LoraSet;
use crate::adapters::prompt::PromptAdapter;
use crate::config::TrainConfig;
use crate::data::{self, Batch, DataFormat, Example, LoadReport};
use crate::models::llama::{BlockExpansion, Llama, StudentLineage};
use crate::objectives::causal_lm::CausalLm;
use crate::tokenizer::Tokenizer;
use crate::train::{Epochs, Evaluation, Objective, RunDir, Trainer};
use crate::{GraftError, Result};
use candle_core::Device;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub use crate::train::{Event, StepRecord};

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
    /// For a smaller student (`model.keep_layers`): the teacher's block count and the blocks
    /// kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub student: Option<StudentLineage>,
    /// For a model grown by block expansion (`model.expand_blocks`): the original block count
    /// and the indices of the new blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expansion: Option<BlockExpansion>,
    /// For a distillation run with `distill.teacher_cache`: whether the cache was filled or
    /// reused, the fill time, positions held and bytes on disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher_cache: Option<super::distill_fill::CacheReport>,
    /// For a multitask run (`graft multitask`): each task's results, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<std::collections::BTreeMap<String, super::multitask::TaskSummary>>,
}

/// Writes `summary.json` into the run directory `out`.
pub(crate) fn write_summary(out: &std::path::Path, summary: &Summary) -> Result<()> {
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(summary)?).map_err(|e| GraftError::io(&path, e))
}

/// Keys a resumed run may change without invalidating its checkpoint.
pub(crate) const RESUME_SAFE_KEYS: &[&str] =
    &["train.eval_every", "train.save_every", "train.eval_batches", "output.dir"];

/// The run directory `out` of a run configured by `cfg` (any config schema), refusing a resume
/// whose config differs from the checkpoint's in a key other than the resume-safe ones, and
/// writing `config.resolved.toml` once the run is accepted.
pub(crate) fn open_run_dir<C>(cfg: &C, out: &std::path::Path, resume: bool, save_every: u64) -> Result<RunDir>
where
    C: Serialize + serde::de::DeserializeOwned + Clone + 'static,
{
    let config_toml = toml::to_string(cfg).map_err(|e| GraftError::Input(format!("config: {e}")))?;
    let saved_cfg = cfg.clone();
    let changes = move |saved: &str| -> Result<Vec<String>> {
        let saved: C = toml::from_str(saved).map_err(|e| GraftError::Input(format!("checkpoint config: {e}")))?;
        Ok(crate::config::differing_keys(&saved, &saved_cfg)
            .into_iter()
            .filter(|k| !RESUME_SAFE_KEYS.contains(&k.as_str()))
            .collect())
    };
    Ok(RunDir::open(out, resume, save_every)?
        .with_settings(config_toml.clone(), Box::new(changes))
        .writing_on_accept("config.resolved.toml", config_toml))
}

/// What a run reads per example and how it batches them: fine-tuning's [`Example`]s batched by
/// `make_batches` ([`StudentData`]), or those with something beside each (cross-tokenizer
/// distillation's teacher rendering) batched into a batch type of their own.
pub(crate) trait RunData {
    /// One example with what goes with it.
    type Item: Clone;
    /// A micro-batch of the objective.
    type Batch: Clone;
    /// Reads the examples of `path` for the student's tokenizer `tok`, in the file's order, with
    /// the report of the student's examples.
    fn load(
        &self,
        path: &Path,
        format: DataFormat,
        tok: &Tokenizer,
        seq_len: usize,
    ) -> Result<(Vec<Self::Item>, LoadReport)>;
    /// The student's example of `item`.
    fn example(item: &Self::Item) -> &Example;
    /// Micro-batches of `items`, in order (`pad`: the student's pad id).
    fn batches(&self, items: &[Self::Item], cfg: &TrainConfig, pad: u32, device: &Device) -> Result<Vec<Self::Batch>>;
}

/// Fine-tuning's data: the student's examples, as `make_batches` groups them.
pub(crate) struct StudentData;

impl RunData for StudentData {
    type Item = Example;
    type Batch = Batch;

    fn load(
        &self,
        path: &Path,
        format: DataFormat,
        tok: &Tokenizer,
        seq_len: usize,
    ) -> Result<(Vec<Example>, LoadReport)> {
        Ok(data::load_examples(path, format, tok, seq_len)?)
    }

    fn example(item: &Example) -> &Example {
        item
    }

    fn batches(&self, items: &[Example], cfg: &TrainConfig, pad: u32, device: &Device) -> Result<Vec<Batch>> {
        Ok(data::make_batches(items, cfg.train.batch_size, cfg.data.seq_len, cfg.data.packing, pad, device)?)
    }
}

/// A run's training and evaluation items.
type TrainEval<T> = (Vec<T>, Vec<T>);

/// The train and eval examples of `cfg` (the eval file, or a held-out share of the train file),
/// read by `run_data`.
pub(crate) fn load_data<D: RunData>(
    cfg: &TrainConfig,
    tok: &Tokenizer,
    run_data: &D,
    on_event: &mut dyn FnMut(Event),
) -> Result<TrainEval<D::Item>> {
    let (train_path, eval_path) = super::data_build::data_files(&cfg.data, &mut |n| on_event(Event::Note(n)))?;
    let (train, report) = run_data.load(&train_path, cfg.data.format, tok, cfg.data.seq_len)?;
    on_event(Event::Note(format!(
        "train data: {} examples, {} tokens ({} supervised), {} truncated to {} tokens",
        report.n_examples, report.n_tokens, report.n_supervised_tokens, report.n_truncated, cfg.data.seq_len
    )));
    if train.is_empty() {
        return Err(GraftError::Input(format!(
            "data.train: {} holds no training example (an empty corpus)",
            train_path.display()
        )));
    }
    let (train, eval) = match &eval_path {
        Some(path) => (train, run_data.load(path, cfg.data.format, tok, cfg.data.seq_len)?.0),
        None => data::split_train_eval(train, cfg.data.eval_fraction, cfg.train.seed),
    };
    let train = match &cfg.data.replay {
        Some(r) => mix_replay(r, train, tok, cfg, run_data, on_event)?,
        None => train,
    };
    if train.is_empty() || eval.is_empty() {
        return Err(GraftError::Input("the train/eval split left one side empty: add data or set data.eval".into()));
    }
    Ok((train, eval))
}

/// `train` with the replayed share of `r`'s examples joined (the evaluation set stays the
/// domain's).
fn mix_replay<D: RunData>(
    r: &crate::config::ReplaySection,
    train: Vec<D::Item>,
    tok: &Tokenizer,
    cfg: &TrainConfig,
    run_data: &D,
    on_event: &mut dyn FnMut(Event),
) -> Result<Vec<D::Item>> {
    let path = super::data_build::resolve(&r.path, &mut |n| on_event(Event::Note(n)))?;
    let (replay, _) = run_data.load(&path, r.format, tok, cfg.data.seq_len)?;
    if replay.is_empty() {
        return Err(GraftError::Input(format!("data.replay.path: {} holds no example", path.display())));
    }
    let n_domain = train.len();
    let mixed = data::mix_in(train, &replay, r.share, cfg.train.seed);
    on_event(Event::Note(format!(
        "replay: {} of {} training examples from {} (share {})",
        mixed.len() - n_domain,
        mixed.len(),
        path.display(),
        r.share
    )));
    Ok(mixed)
}

/// The examples of epoch `epoch`, shuffled by `(seed, epoch)`, as micro-batches.
pub(crate) fn epoch_batches<D: RunData>(
    cfg: &TrainConfig,
    run_data: &D,
    train: &[D::Item],
    epoch: u64,
    pad: u32,
    device: &Device,
) -> Result<Vec<D::Batch>> {
    let mut ex = train.to_vec();
    data::shuffle(&mut ex, cfg.train.seed, epoch);
    run_data.batches(&ex, cfg, pad, device)
}

/// The evaluation micro-batches of `eval` (unshuffled, at most `train.eval_batches` when set).
pub(crate) fn held_out_batches(cfg: &TrainConfig, eval: &[Example], pad: u32, device: &Device) -> Result<Vec<Batch>> {
    let mut batches = data::make_batches(eval, cfg.train.batch_size, cfg.data.seq_len, false, pad, device)?;
    if cfg.train.eval_batches > 0 {
        batches.truncate(cfg.train.eval_batches);
    }
    Ok(batches)
}

/// Writes what trained into the run directory: the adapter (PEFT format) or the whole model (a
/// Hugging Face folder); returns its folder.
pub(crate) fn save_trained(
    cfg: &TrainConfig,
    model: &Llama,
    tokenizer: &Tokenizer,
    lora: Option<&LoraSet>,
    prompt: Option<&PromptAdapter>,
) -> Result<PathBuf> {
    let out = &cfg.output.dir;
    if let Some(set) = lora {
        let dir = out.join("adapter");
        crate::io::peft::save_lora_with_lineage(set, &dir, &cfg.model.name, model.lineage())?;
        Ok(dir)
    } else if let Some(adapter) = prompt {
        let dir = out.join("adapter");
        crate::io::peft_prompt::save_prompt(adapter, model, &dir, &cfg.model.name)?;
        Ok(dir)
    } else {
        let dir = out.join("model");
        crate::io::hf_folder::write_llama_folder(model, tokenizer, &dir, crate::models::Model::dtype(model))?;
        Ok(dir)
    }
}

/// Runs the fine-tuning described by `cfg`; with `resume`, continues from the newest good
/// checkpoint in `cfg.output.dir`.
pub fn run(cfg: &TrainConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<Summary> {
    run_keeping_model(cfg, resume, on_event).map(|(summary, _)| summary)
}

/// [`run`], also handing back the trained model (adapters attached, in evaluation mode), for
/// callers that score it right away instead of loading what was written.
pub fn run_keeping_model(cfg: &TrainConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<(Summary, Llama)> {
    cfg.validate()?;
    let run_dir = open_run_dir(cfg, &cfg.output.dir, resume, cfg.train.save_every)?;
    train_with(cfg, run_dir, on_event, &(), |tm, ()| {
        Ok(Box::new(CausalLm::new(&tm.model, tm.vars.clone(), tm.lora.as_ref().map(|l| l.clock.clone()))))
    })
}

/// Trains the model `cfg` describes with the objective `make` builds from it and `with` (what
/// else the objective borrows, such as a teacher), in `run_dir`: the data, the loop settings,
/// evaluation (the held-out next-token loss), the trainer, then the adapter or model and
/// `summary.json`. Fine-tuning and distillation differ only in `make`.
pub(crate) fn train_with<W: ?Sized>(
    cfg: &TrainConfig,
    run_dir: RunDir,
    on_event: &mut dyn FnMut(Event),
    with: &W,
    make: impl for<'m> FnOnce(&'m TrainableModel, &'m W) -> Result<Box<dyn Objective<Batch = Batch> + 'm>>,
) -> Result<(Summary, Llama)> {
    train_with_data(cfg, run_dir, on_event, with, &StudentData, make)
}

/// [`train_with`] on the examples and micro-batches of `run_data` (evaluation stays the
/// student's held-out next-token loss).
pub(crate) fn train_with_data<W: ?Sized, D: RunData>(
    cfg: &TrainConfig,
    run_dir: RunDir,
    on_event: &mut dyn FnMut(Event),
    with: &W,
    run_data: &D,
    make: impl for<'m> FnOnce(&'m TrainableModel, &'m W) -> Result<Box<dyn Objective<Batch = D::Batch> + 'm>>,
) -> Result<(Summary, Llama)> {
    let out = cfg.output.dir.clone();
    let trainable = build_model(cfg)?;
    let TrainableModel { model, tokenizer, lora, prompt, .. } = &trainable;
    if lora.is_none() && prompt.is_none() {
        // Refused before training, not after it: the trained weights could not be saved.
        model.config().require_llama("saving a fully fine-tuned model")?;
    }
    let device = crate::models::Model::device(model).clone();
    let pad = tokenizer.batch_pad_id();

    // Data: shuffled training batches per epoch, a fixed evaluation set.
    let (train_ex, eval_ex) = load_data(cfg, tokenizer, run_data, on_event)?;
    let eval_ex: Vec<Example> = eval_ex.iter().map(|item| D::example(item).clone()).collect();
    let eval_batches = held_out_batches(cfg, &eval_ex, pad, &device)?;
    let mut batches = Epochs::new(|epoch| epoch_batches(cfg, run_data, &train_ex, epoch, pad, &device))?;

    // Train the objective.
    let settings = super::parts::loop_settings(&cfg.train, batches.per_epoch());
    let objective = make(&trainable, with)?;
    let mut evaluate = || eval_loss(model, &eval_batches).map(Evaluation::from);
    let trainer = Trainer {
        settings,
        optimizer: optimizer_kind(&cfg.train),
        run_dir: Some(run_dir),
        evaluate: Some(&mut evaluate),
    };
    let outcome = trainer.run(&*objective, &mut batches, on_event)?;
    drop(objective);

    // Write the adapter or model, then the summary (the trainer's, with perplexities and output).
    let output = save_trained(cfg, model, tokenizer, lora.as_ref(), prompt.as_ref())?;
    let summary = summary_of(&outcome, output, model)?;
    write_summary(&out, &summary)?;
    Ok((summary, trainable.model))
}

/// The `summary.json` of a finished, evaluated run whose result went to `output`.
pub(crate) fn summary_of(outcome: &crate::train::Outcome, output: PathBuf, model: &Llama) -> Result<Summary> {
    let run = outcome.summary();
    let (Some(base_eval_loss), Some(final_eval_loss)) = (run.base_eval_loss, run.final_eval_loss) else {
        return Err(GraftError::Input("internal: the run was not evaluated".into()));
    };
    Ok(Summary {
        base_eval_loss,
        base_eval_ppl: base_eval_loss.exp(),
        final_eval_loss,
        final_eval_ppl: final_eval_loss.exp(),
        steps: run.steps,
        tokens: run.units,
        wall_time_s: run.wall_time_s,
        peak_rss_mb: run.peak_rss_mb,
        trainable_params: run.trainable_params,
        output,
        student: model.lineage().cloned(),
        expansion: model.expansion().cloned(),
        teacher_cache: None,
        tasks: None,
    })
}
