//! The one training loop. Every technique that learns by gradient steps runs here: an
//! [`Objective`] supplies the loss and the parameter groups, a [`BatchSource`] the data; the
//! trainer owns the rest once — steps over epochs, gradient accumulation, clipping, the NaN /
//! Inf guard, the optimizer and schedule per parameter group, evaluation, atomic checkpoints
//! with exact resume, `metrics.jsonl` and progress events.
//!
//! A multitask objective names each micro-batch's task (`Objective::task`): the trainer then logs
//! each task's loss of a step and its evaluation losses, and with [`LoopSettings::pcgrad`] combines
//! the tasks' gradients of a step with PCGrad (`multitask::pcgrad::pcgrad_step`).
//!
//! Resume is exact because everything a step depends on is either in the checkpoint (trainable
//! variables, optimizer moments, loop state) or a pure function of it: the micro-batch at
//! run-wide index `i` comes from `(seed, epoch)`, dropout from `(seed, module, i)`.

use super::checkpoint::LoopState;
use super::events::{Event, StepRecord};
use super::objective::{BatchSource, Objective, TASK_LOSS};
use super::optim::{Optimizer, OptimizerKind};
use super::run_dir::RunDir;
use super::schedule::Schedule;
use super::step::{accumulate_and_step, LossSum};
use crate::multitask::pcgrad::pcgrad_step;
use crate::{GraftError, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

/// How long a run trains and how each step goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoopSettings {
    /// Optimizer steps the run reaches.
    pub total_steps: u64,
    /// Micro-batches per optimizer step.
    pub grad_accum: u64,
    /// Global gradient-norm clip (0 = off).
    pub max_grad_norm: f64,
    /// Learning rate of each step (each parameter group scales it).
    pub schedule: Schedule,
    /// Evaluate every N steps (0 = only at the start and end), when there is an evaluation.
    pub eval_every: u64,
    /// Multitask: combine the tasks' gradients of each step with PCGrad (the micro-batches of a
    /// step grouped by `Objective::task`, one accumulation per task, projection orders drawn
    /// from this seed and the step) instead of summing them. `None`: one accumulation.
    pub pcgrad: Option<u64>,
    /// Precision of the products through the model's weights while the run trains and evaluates.
    pub precision: crate::ops::MatmulPrecision,
}

/// What one evaluation measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// The held-out loss.
    pub loss: f64,
    /// Multitask: each task's held-out loss (empty otherwise).
    pub tasks: BTreeMap<String, f64>,
}

impl From<f64> for Evaluation {
    fn from(loss: f64) -> Self {
        Self { loss, tasks: BTreeMap::new() }
    }
}

/// A training run: the loop's settings, the update rule, where files go, how to evaluate.
pub struct Trainer<'a> {
    /// Steps, accumulation, clipping, schedule, evaluation interval.
    pub settings: LoopSettings,
    /// The update rule; the objective's parameter groups scale its rate and may set their own
    /// weight decay.
    pub optimizer: OptimizerKind,
    /// Checkpoints, `metrics.jsonl` and resume; `None` trains in memory only.
    pub run_dir: Option<RunDir>,
    /// Held-out loss (no gradients; per task for a multitask run), measured before training,
    /// every `eval_every` steps and at the end.
    pub evaluate: Option<&'a mut dyn FnMut() -> Result<Evaluation>>,
}

/// What a finished run hands back.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Where the loop ended (steps, units trained on, wall time, base evaluation loss).
    pub state: LoopState,
    /// Evaluation loss after training, when there is an evaluation.
    pub final_eval_loss: Option<f64>,
    /// Multitask: each task's evaluation loss after training.
    pub final_eval_tasks: BTreeMap<String, f64>,
    /// Every step's record, those before a resume read back from `metrics.jsonl`.
    pub history: Vec<StepRecord>,
    /// Trainable parameters (elements of every variable of every group).
    pub trainable_params: usize,
}

/// `summary.json` of a run, written by the trainer into every run directory; a recipe that knows
/// more (fine-tuning: perplexities, where the adapter went) replaces it with its own superset.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Optimizer steps done.
    pub steps: u64,
    /// Supervised units trained on (tokens for a language model, examples for a classifier).
    pub units: u64,
    /// Training wall time in seconds, summed over every part of an interrupted and resumed run.
    pub wall_time_s: f64,
    /// Peak resident memory of the process, MB.
    pub peak_rss_mb: Option<f64>,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Evaluation loss before training, when there is an evaluation.
    pub base_eval_loss: Option<f64>,
    /// Evaluation loss after training, when there is an evaluation.
    pub final_eval_loss: Option<f64>,
}

impl Outcome {
    /// The run's [`RunSummary`].
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            steps: self.state.step,
            units: self.state.tokens_seen,
            wall_time_s: self.state.elapsed_s,
            peak_rss_mb: crate::bench::memory::peak_rss_bytes().map(|b| b as f64 / 1e6),
            trainable_params: self.trainable_params,
            base_eval_loss: self.state.base_eval_loss,
            final_eval_loss: self.final_eval_loss,
        }
    }
}

impl Trainer<'_> {
    /// Trains `objective` on `batches` until `settings.total_steps`, reporting through
    /// `on_event`; with a run directory, continues from its checkpoint when it resumes.
    pub fn run<O: Objective + ?Sized>(
        self,
        objective: &O,
        batches: &mut dyn BatchSource<O::Batch>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Outcome> {
        let precision = self.settings.precision;
        if precision.effective() != precision {
            on_event(Event::Note(format!(
                "precision {}: this machine has no bf16 kernel for it (AVX-512 BF16 on the CPU), the products run in f32",
                precision.name()
            )));
        }
        crate::ops::with_matmul_precision(precision, || self.run_steps(objective, batches, on_event))
    }

    fn run_steps<O: Objective + ?Sized>(
        mut self,
        objective: &O,
        batches: &mut dyn BatchSource<O::Batch>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Outcome> {
        let s = self.settings;
        let mut optimizer = Optimizer::with_groups(self.optimizer, objective.param_groups())?;
        let trainable_params = optimizer.params().iter().map(|(_, v)| v.elem_count()).sum();
        let buffers = objective.buffers();
        let (mut state, mut history) = match &self.run_dir {
            Some(dir) => dir.start(&mut optimizer, &buffers, on_event)?,
            None => (LoopState::start(String::new()), Vec::new()),
        };
        objective.set_training(false);
        if let (None, Some(evaluate)) = (state.base_eval_loss, self.evaluate.as_mut()) {
            on_event(Event::Note("evaluating the base model".into()));
            state.base_eval_loss = Some(evaluate()?.loss);
        }
        let mut log = self.run_dir.as_ref().map(|d| d.metrics_log()).transpose()?;
        on_event(Event::Start { total_steps: s.total_steps, from_step: state.step });
        let process_start = Instant::now();
        let elapsed_before = state.elapsed_s;
        let resumed_at = state.step;
        while state.step < s.total_steps {
            let t0 = Instant::now();
            let first = state.micro_batches_done;
            let micro = (first..first + s.grad_accum).map(|i| batches.batch(i)).collect::<Result<Vec<_>>>()?;
            let items: usize = micro.iter().map(|b| objective.batch_size(b)).sum();
            let lr = s.schedule.lr(state.step);
            let mut sums: BTreeMap<&'static str, f64> = BTreeMap::new();
            // Per task of the step: (name, unweighted loss sum, units).
            let mut tasks: BTreeMap<usize, (String, f64, usize)> = BTreeMap::new();
            let mut loss_of = |i: usize| -> Result<LossSum> {
                let out = objective.loss(&micro[i], first + i as u64)?;
                let task = objective.task(&micro[i]);
                for (name, value) in out.metrics {
                    if let (TASK_LOSS, Some((t, task_name))) = (name, task) {
                        let entry = tasks.entry(t).or_insert_with(|| (task_name.to_string(), 0.0, 0));
                        entry.1 += value;
                        entry.2 += out.loss.count;
                    }
                    *sums.entry(name).or_default() += value;
                }
                Ok(out.loss)
            };
            objective.set_training(true);
            let stats = match s.pcgrad {
                None => accumulate_and_step(state.step + 1, &mut optimizer, micro.len(), loss_of, s.max_grad_norm, lr)?,
                Some(seed) => {
                    let groups = task_groups(objective, &micro);
                    let counts: Vec<usize> = groups.iter().map(Vec::len).collect();
                    let of = |t: usize, m: usize| loss_of(groups[t][m]);
                    pcgrad_step(state.step + 1, &mut optimizer, &counts, seed, of, s.max_grad_norm, lr)?
                }
            };
            objective.set_training(false);
            let generation = objective.take_generation();
            state.step += 1;
            state.micro_batches_done += s.grad_accum;
            state.tokens_seen += stats.targets as u64;
            let eval_due = s.eval_every > 0 && state.step.is_multiple_of(s.eval_every) && state.step < s.total_steps;
            let eval = match self.evaluate.as_mut() {
                Some(evaluate) if eval_due => Some(evaluate()?),
                _ => None,
            };
            let single_task = tasks.values().next().filter(|_| tasks.len() == 1).map(|t| t.0.clone());
            let record = StepRecord {
                step: state.step,
                loss: stats.loss,
                lr,
                grad_norm: stats.grad_norm,
                tokens_per_s: items as f64 / t0.elapsed().as_secs_f64(),
                eval_loss: eval.as_ref().map(|e| e.loss),
                metrics: sums.into_iter().map(|(k, v)| (k.to_string(), v / stats.targets as f64)).collect(),
                task: single_task,
                task_losses: tasks.into_values().map(|(name, sum, units)| (name, sum / units.max(1) as f64)).collect(),
                task_eval_losses: eval.map(|e| e.tasks).unwrap_or_default(),
                on_policy: generation.map(|g| g.on_policy),
                generated_tokens: generation.map(|g| g.tokens),
            };
            if let (Some(file), Some(dir)) = (log.as_mut(), &self.run_dir) {
                writeln!(file, "{}", serde_json::to_string(&record)?)
                    .map_err(|e| GraftError::io(dir.metrics_path(), e))?;
            }
            on_event(Event::Step(record.clone()));
            history.push(record);
            state.elapsed_s = elapsed_before + process_start.elapsed().as_secs_f64();
            if let Some(dir) = self.run_dir.as_ref().filter(|d| d.save_due(state.step, s.total_steps)) {
                dir.save(&optimizer, &buffers, &state)?;
            }
        }
        state.elapsed_s = elapsed_before + process_start.elapsed().as_secs_f64();
        // A run resumed from its final checkpoint (killed while writing its outputs) keeps it:
        // saving the same step again would delete the folder `LATEST` names before its copy is in.
        if let Some(dir) = self.run_dir.as_ref().filter(|_| state.step > resumed_at) {
            dir.save(&optimizer, &buffers, &state)?;
        }
        let final_eval = self.evaluate.as_mut().map(|evaluate| evaluate()).transpose()?;
        let (final_eval_loss, final_eval_tasks) = match final_eval {
            Some(e) => (Some(e.loss), e.tasks),
            None => (None, BTreeMap::new()),
        };
        let outcome = Outcome { state, final_eval_loss, final_eval_tasks, history, trainable_params };
        if let Some(dir) = &self.run_dir {
            dir.write_json("summary.json", &outcome.summary())?;
        }
        Ok(outcome)
    }
}

/// The micro-batches of a step grouped by their task (`Objective::task`, one group per task in
/// task order; batches without a task form task 0's group): indices into `micro`.
fn task_groups<O: Objective + ?Sized>(objective: &O, micro: &[O::Batch]) -> Vec<Vec<usize>> {
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, b) in micro.iter().enumerate() {
        groups.entry(objective.task(b).map_or(0, |(t, _)| t)).or_default().push(i);
    }
    groups.into_values().collect()
}
