//! Multitask recipe (`graft multitask`): one model (one shared adapter, or one adapter per task
//! routed by the batch's task) trained on several tasks on the one trainer. Each optimizer step `k` (1-based) draws its task with the
//! [`TaskSampler`] at `k − 1` — a pure function of the seed and the step, so a resumed run draws
//! what an uninterrupted one did — and trains on `train.grad_accum` micro-batches of that task;
//! with `weighting = "pcgrad"` every step takes `train.grad_accum` micro-batches of every task and
//! the trainer combines the tasks' gradients with PCGrad. Each task is evaluated on its own
//! held-out set; the run's evaluation loss is their mean per supervised token.

use super::finetune::{
    epoch_batches, held_out_batches, load_data, open_run_dir, save_trained, summary_of, write_summary, StudentData,
    Summary,
};
use super::parts::{build_model, eval_loss, loop_settings, optimizer_kind};
use crate::adapters::lora::LoraSpec;
use crate::config::multitask::{AdapterSharing, MultitaskConfig, WeightingName, DEFAULT_TASK_R};
use crate::config::TrainConfig;
use crate::data::Batch;
use crate::multitask::{LossWeighting, TaskAdapters, TaskSampler, TaskSize};
use crate::objectives::causal_lm::CausalLm;
use crate::objectives::multitask::{MultitaskLm, TaskBatch};
use crate::train::{BatchSource, Epochs, Evaluation, Event, Trainer};
use crate::{GraftError, Result};
use candle_core::DType;
use serde::Serialize;
use std::collections::BTreeMap;

/// One task's part of a multitask run's `summary.json` (`tasks.NAME`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskSummary {
    /// Evaluation loss of the task's held-out set after training.
    pub eval_loss: f64,
    /// Its perplexity.
    pub eval_ppl: f64,
    /// Training examples of the task.
    pub examples: usize,
    /// The task's share of steps by the mixing formula.
    pub share: f64,
    /// Steps that trained on the task (every step under PCGrad).
    pub steps: u64,
    /// The task's loss weight at the end: `w_i` (equal, fixed, PCGrad: 1) or `exp(−s_i)`
    /// (uncertainty).
    pub loss_weight: f64,
    /// The task's own adapter folder (`multitask.adapters = "per_task"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<std::path::PathBuf>,
}

/// A task's micro-batches, built one epoch at a time.
type TaskEpochs<'a> = Epochs<Batch, Box<dyn FnMut(u64) -> Result<Vec<Batch>> + 'a>>;

/// The run's micro-batches: micro-batch `index` belongs to step `index / per_step` and is the
/// next batch of that step's task (each task walks through its own epochs).
struct TaskBatches<'a> {
    tasks: Vec<TaskEpochs<'a>>,
    sampler: TaskSampler,
    /// Micro-batches a task gives per step (`train.grad_accum`).
    per_task: u64,
    /// PCGrad: every step takes every task's micro-batches, in task order.
    all_tasks: bool,
    /// Steps `0..counted` drawn per task (a memo of the sampler's draws).
    counted: u64,
    counts: Vec<u64>,
}

impl TaskBatches<'_> {
    /// How many of the steps before `step` trained on `task`.
    fn steps_before(&mut self, task: usize, step: u64) -> u64 {
        if step < self.counted {
            self.counted = 0;
            self.counts.iter_mut().for_each(|c| *c = 0);
        }
        while self.counted < step {
            self.counts[self.sampler.task(self.counted)] += 1;
            self.counted += 1;
        }
        self.counts[task]
    }
}

impl BatchSource<TaskBatch> for TaskBatches<'_> {
    fn batch(&mut self, index: u64) -> Result<TaskBatch> {
        let (task, local) = if self.all_tasks {
            let per_step = self.per_task * self.tasks.len() as u64;
            let (step, within) = (index / per_step, index % per_step);
            ((within / self.per_task) as usize, step * self.per_task + within % self.per_task)
        } else {
            let step = index / self.per_task;
            let task = self.sampler.task(step);
            (task, self.steps_before(task, step) * self.per_task + index % self.per_task)
        };
        let batch = self.tasks[task].batch(local)?;
        Ok(TaskBatch { task, batch })
    }
}

/// `e` with the task named, when it is bad input (a data error becomes an input error that
/// keeps its message).
fn in_task(name: &str, e: GraftError) -> GraftError {
    match e {
        GraftError::Input(_) | GraftError::Data(_) => GraftError::Input(format!("task `{name}`: {e}")),
        other => other,
    }
}

/// Runs the multitask training `cfg` describes; with `resume`, continues from the newest good
/// checkpoint in `cfg.output.dir`. Writes the shared adapter (or model) — or, per task, its
/// adapter under `adapters/NAME` — and `summary.json` (fine-tuning's, with `tasks`);
/// `metrics.jsonl` has each step's task and its loss.
pub fn run(cfg: &MultitaskConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<Summary> {
    cfg.validate()?;
    let run_dir = open_run_dir(cfg, &cfg.output.dir, resume, cfg.train.save_every)?;
    let task_cfgs: Vec<TrainConfig> = (0..cfg.tasks.len()).map(|i| cfg.task_config(i)).collect::<Result<_>>()?;
    let names = cfg.task_names();
    let shared = &task_cfgs[0];
    let mut trainable = build_model(shared)?;
    let bank = task_bank(cfg, &mut trainable, &names)?;
    let (model, tokenizer) = (&trainable.model, &trainable.tokenizer);
    if trainable.lora.is_none() && trainable.prompt.is_none() {
        model.config().require_llama("saving a fully fine-tuned model")?;
    }
    let device = crate::models::Model::device(model).clone();
    let pad = tokenizer.pad_id().or(tokenizer.eos_id()).unwrap_or(0);

    // Data: each task's examples, its epochs of batches and its evaluation batches.
    let mut data = Vec::with_capacity(names.len());
    for (name, tc) in names.iter().zip(&task_cfgs) {
        on_event(Event::Note(format!("task {name}")));
        let (train, eval) = load_data(tc, tokenizer, &StudentData, on_event).map_err(|e| in_task(name, e))?;
        let eval = held_out_batches(tc, &eval, pad, &device).map_err(|e| in_task(name, e))?;
        data.push((train, eval));
    }
    let sizes: Vec<TaskSize> = names.iter().zip(&data).map(|(n, (train, _))| TaskSize::new(n, train.len())).collect();
    let sampler = TaskSampler::new(&sizes, cfg.mixing(), cfg.train.seed)?;
    let mut tasks = Vec::with_capacity(names.len());
    for ((name, tc), (train, _)) in names.iter().zip(&task_cfgs).zip(&data) {
        let (device, train) = (device.clone(), train.as_slice());
        let make: Box<dyn FnMut(u64) -> Result<Vec<Batch>> + '_> =
            Box::new(move |epoch| epoch_batches(tc, &StudentData, train, epoch, pad, &device));
        tasks.push(Epochs::new(make).map_err(|e| in_task(name, e))?);
    }
    let per_epoch: u64 = tasks.iter().map(|t| t.per_epoch()).sum();
    let pcgrad = cfg.multitask.weighting == WeightingName::Pcgrad;
    let mut batches = TaskBatches {
        tasks,
        sampler: sampler.clone(),
        per_task: cfg.train.grad_accum as u64,
        all_tasks: pcgrad,
        counted: 0,
        counts: vec![0; names.len()],
    };

    // The loop: one task per step (or every task, PCGrad); `epochs` counts every task's batches.
    let mut train_section = cfg.train.clone();
    if pcgrad {
        train_section.grad_accum *= names.len();
    }
    let mut settings = loop_settings(&train_section, per_epoch);
    settings.pcgrad = pcgrad.then_some(cfg.train.seed);
    let weighting = LossWeighting::new(&names, cfg.weighting(), &device, DType::F32)?;
    let clock = trainable.lora.as_ref().map(|l| l.clock.clone());
    let mut objective = MultitaskLm::new(CausalLm::new(model, trainable.vars.clone(), clock), weighting, names.clone());
    if let Some(bank) = &bank {
        objective = objective.with_bank(bank);
    }
    let mut evaluate = || evaluate_tasks(model, bank.as_ref(), &names, &data);
    let trainer = Trainer {
        settings,
        optimizer: optimizer_kind(&cfg.train),
        run_dir: Some(run_dir),
        evaluate: Some(&mut evaluate),
    };
    let outcome = trainer.run(&objective, &mut batches, on_event)?;

    // The shared adapter or model (or each task's adapter), then the summary with every task's part.
    let (output, task_adapters) = match &bank {
        Some(bank) => {
            if trainable.lora.is_some() {
                save_trained(shared, model, tokenizer, trainable.lora.as_ref(), None)?;
            }
            let dir = cfg.output.dir.join("adapters");
            (dir.clone(), bank.save(&dir, &shared.model.name, model.lineage(), trainable.lora.as_ref())?)
        }
        None => (save_trained(shared, model, tokenizer, trainable.lora.as_ref(), trainable.prompt.as_ref())?, vec![]),
    };
    let mut summary = summary_of(&outcome, output, model)?;
    let weights = objective.loss_weights()?;
    let mut parts = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let eval_loss = outcome.final_eval_tasks.get(name).copied().unwrap_or(f64::NAN);
        let steps = outcome.history.iter().filter(|r| pcgrad || r.task.as_deref() == Some(name)).count() as u64;
        let part = TaskSummary {
            eval_loss,
            eval_ppl: eval_loss.exp(),
            examples: sizes[i].examples,
            share: sampler.shares()[i],
            steps,
            loss_weight: weights[i],
            adapter: task_adapters.get(i).cloned(),
        };
        parts.insert(name.clone(), part);
    }
    summary.tasks = Some(parts);
    write_summary(&cfg.output.dir, &summary)?;
    Ok(summary)
}

/// The bank of per-task adapters `multitask.adapters` asks for, attached to `trainable`'s model
/// (its variables then are what trains): for `per_task` the adapter the model was built with
/// becomes task 0's and every further task gets a fresh one; for `shared_plus_task` the built
/// adapter stays, shared, and every task gets a fresh one of rank `task_r`; `None` for `shared`.
fn task_bank(
    cfg: &MultitaskConfig,
    trainable: &mut super::parts::TrainableModel,
    names: &[String],
) -> Result<Option<TaskAdapters>> {
    let seed = cfg.train.seed;
    let bank = match (cfg.multitask.adapters, trainable.lora.take()) {
        (AdapterSharing::Shared, lora) => {
            trainable.lora = lora;
            return Ok(None);
        }
        (AdapterSharing::PerTask, Some(first)) => {
            let bank = TaskAdapters::attach(&mut trainable.model, first, names, seed)?;
            trainable.vars = bank.named_vars();
            bank
        }
        (AdapterSharing::SharedPlusTask, Some(shared)) => {
            let r = cfg.multitask.task_r.unwrap_or(DEFAULT_TASK_R);
            let spec =
                LoraSpec { r, alpha: shared.spec.alpha * r as f64 / shared.spec.r as f64, ..shared.spec.clone() };
            // Seeds after the shared adapter's (drawn with `seed`).
            let bank = TaskAdapters::attach_fresh(&mut trainable.model, &spec, names, seed.wrapping_add(1))?;
            trainable.vars = shared.named_vars();
            trainable.vars.extend(bank.named_vars());
            trainable.lora = Some(shared);
            bank
        }
        (sharing, None) => {
            return Err(GraftError::Input(format!(
                "multitask.adapters = {} trains a LoRA per task: set adapter.kind = \"lora\" or \"qlora\"",
                serde_json::to_string(&sharing).unwrap_or_default()
            )))
        }
    };
    Ok(Some(bank))
}

/// Each task's held-out loss (through its own adapter of `bank`, when there is one), and their
/// mean per supervised token as the run's loss.
fn evaluate_tasks(
    model: &crate::models::llama::Llama,
    bank: Option<&TaskAdapters>,
    names: &[String],
    data: &[(Vec<crate::data::Example>, Vec<Batch>)],
) -> Result<Evaluation> {
    let (mut total, mut tokens) = (0.0, 0usize);
    let mut tasks = BTreeMap::new();
    for (i, (name, (_, eval))) in names.iter().zip(data).enumerate() {
        if let Some(bank) = bank {
            bank.activate(i)?;
        }
        let loss = eval_loss(model, eval).map_err(|e| in_task(name, e))?;
        let n: usize = eval.iter().map(|b| b.n_targets).sum();
        total += loss * n as f64;
        tokens += n;
        tasks.insert(name.clone(), loss);
    }
    Ok(Evaluation { loss: total / tokens.max(1) as f64, tasks })
}
