//! What a training run reports while it goes: notes, its start, and one record per optimizer
//! step (also the lines of `metrics.jsonl`). The CLI turns these into a progress bar and logs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Progress reported while a run goes.
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Optimizer step (1-based).
    pub step: u64,
    /// Mean training loss per supervised unit (token, or example) of this step.
    pub loss: f64,
    /// Learning rate used (the schedule's; parameter groups scale it).
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens (all positions of the step's batches; examples for classification heads) per
    /// second.
    pub tokens_per_s: f64,
    /// Evaluation loss, on steps where evaluation ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// The objective's metrics per supervised unit of this step (e.g. `accuracy`); absent when
    /// it reports none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Multitask: the task this step trained on, when every micro-batch of the step is of one
    /// task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Multitask: each task's unweighted mean loss per unit in this step (the step's task, or
    /// every task of a PCGrad step).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_losses: BTreeMap<String, f64>,
    /// Multitask: each task's evaluation loss, on steps where evaluation ran.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_eval_losses: BTreeMap<String, f64>,
    /// On-policy distillation (`distill.on_policy` > 0): whether this step trained on the
    /// student's own samples; absent from runs that never generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_policy: Option<bool>,
    /// On-policy distillation: tokens the student generated in this step (0 on a step that
    /// trained on the data); absent from runs that never generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_tokens: Option<u64>,
}
