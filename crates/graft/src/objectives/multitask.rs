//! The multitask language-model objective: next-token loss on a micro-batch of one task (the
//! task id travels with the batch), weighted by the task's loss weighting. A micro-batch of task
//! `i` with loss sum `S` over `u` supervised tokens contributes `w_i·S` (equal, fixed) or
//! `exp(−s_i)·S + s_i·u` (uncertainty, `s_i` learned) to the step; the trainer divides the step
//! by its tokens. The unweighted sum is reported as the [`TASK_LOSS`] metric, which the trainer
//! logs per task. With a bank of per-task adapters, the batch's task puts its own adapter in use
//! before the forward pass.

use super::causal_lm::CausalLm;
use crate::data::Batch;
use crate::multitask::{LossWeighting, TaskAdapters};
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup, TASK_LOSS};
use crate::Result;
use candle_core::DType;

/// A micro-batch of one task.
#[derive(Debug, Clone)]
pub struct TaskBatch {
    /// The task's index in the mixture.
    pub task: usize,
    /// Its token rows.
    pub batch: Batch,
}

/// Causal-LM training over several tasks with a loss weighting.
pub struct MultitaskLm<'a> {
    inner: CausalLm<'a>,
    weighting: LossWeighting,
    names: Vec<String>,
    bank: Option<&'a TaskAdapters>,
}

impl<'a> MultitaskLm<'a> {
    /// The objective of `inner` (the shared model and what trains of it) over the tasks
    /// `names`, weighted by `weighting` (built over the same names).
    pub fn new(inner: CausalLm<'a>, weighting: LossWeighting, names: Vec<String>) -> Self {
        Self { inner, weighting, names, bank: None }
    }

    /// Routes each batch to its task's adapter of `bank`, whose dropout switch and step follow
    /// the run's (`inner`'s clock, if any, drives a shared adapter beside the bank).
    pub fn with_bank(self, bank: &'a TaskAdapters) -> Self {
        Self { bank: Some(bank), ..self }
    }

    /// Each task's current loss weight: `w_i`, or `exp(−s_i)` for uncertainty weighting.
    pub fn loss_weights(&self) -> Result<Vec<f64>> {
        self.weighting.weights()
    }
}

impl Objective for MultitaskLm<'_> {
    type Batch = TaskBatch;

    fn param_groups(&self) -> Vec<ParamGroup> {
        let mut groups = self.inner.param_groups();
        groups.extend(self.weighting.param_group());
        groups
    }

    fn loss(&self, batch: &TaskBatch, micro_step: u64) -> Result<ObjectiveLoss> {
        if let Some(bank) = self.bank {
            bank.activate(batch.task)?;
            bank.set_step(micro_step);
        }
        let LossSum { sum, count, sink } = self.inner.loss(&batch.batch, micro_step)?.loss;
        let raw = sum.detach().to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let weighted = self.weighting.term(batch.task, &sum, count)?;
        Ok(ObjectiveLoss { loss: LossSum { sum: weighted, count, sink }, metrics: vec![(TASK_LOSS, raw)] })
    }

    fn batch_size(&self, batch: &TaskBatch) -> usize {
        self.inner.batch_size(&batch.batch)
    }

    fn set_training(&self, on: bool) {
        self.inner.set_training(on);
        if let Some(bank) = self.bank {
            bank.set_training(on);
        }
    }

    fn task(&self, batch: &TaskBatch) -> Option<(usize, &str)> {
        self.names.get(batch.task).map(|name| (batch.task, name.as_str()))
    }
}
