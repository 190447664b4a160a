//! The objective seam: what a technique gives the trainer. An objective turns one micro-batch
//! into a summed loss (with the number of units it sums over, so gradient accumulation
//! normalises by the step's total) plus named metrics, and names the parameter groups it
//! trains. Everything else — steps, accumulation, clipping, the NaN guard, optimizer, schedule,
//! checkpoints, resume, metrics.jsonl, progress — is the [`Trainer`](super::trainer::Trainer)'s.

use super::optim::ParamGroup;
use super::step::LossSum;
use crate::Result;

/// A training objective over batches of type `Batch`.
pub trait Objective {
    /// What one micro-batch is (token rows, example indices, ...).
    type Batch: Clone;

    /// The variables it trains, in groups with their own learning-rate scale and weight decay.
    fn param_groups(&self) -> Vec<ParamGroup>;

    /// The loss of `batch`: a sum over its supervised units (tokens, examples) with their
    /// count, and metric sums over the same units. `micro_step` is the run-wide index of this
    /// micro-batch; anything random in training (dropout masks) must be a pure function of it
    /// and the seed, so that a resumed run repeats it exactly.
    fn loss(&self, batch: &Self::Batch, micro_step: u64) -> Result<ObjectiveLoss>;

    /// Items of `batch` counted for throughput (`tokens_per_s`): tokens, or examples.
    fn batch_size(&self, batch: &Self::Batch) -> usize;

    /// State the forward pass updates that no gradient trains (batch-norm running statistics
    /// of a network trained from scratch), by name: saved in every checkpoint beside the
    /// trained weights and restored on resume, so a resumed run continues from the same
    /// statistics. Names must differ from the variables' names. Empty by default.
    fn buffers(&self) -> Vec<(String, candle_core::Var)> {
        Vec::new()
    }

    /// Switches training-only behaviour (dropout) on during a step and off for evaluation.
    fn set_training(&self, _on: bool) {}

    /// For a multitask objective: the task `batch` belongs to (its index in the mixture and its
    /// name). The trainer then logs each task's loss of a step (the [`TASK_LOSS`] metric) and,
    /// with PCGrad (`LoopSettings::pcgrad`), combines the tasks' gradients of a step. `None`
    /// (the default): one task.
    fn task(&self, _batch: &Self::Batch) -> Option<(usize, &str)> {
        None
    }

    /// For an objective that generates its own training sequences (on-policy distillation):
    /// what it generated in the step just taken, read once after each step and reset for the
    /// next; the trainer logs it in `StepRecord::on_policy` and `StepRecord::generated_tokens`.
    /// `None` (the default): the objective never generates.
    fn take_generation(&self) -> Option<StepGeneration> {
        None
    }
}

/// What an objective generated in one optimizer step ([`Objective::take_generation`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepGeneration {
    /// Whether the step trained on the model's own samples instead of the data's completions.
    pub on_policy: bool,
    /// Tokens the model generated in the step (0 on a step that is not on-policy).
    pub tokens: u64,
}

/// The metric a multitask objective reports its micro-batch's unweighted loss sum under; the
/// trainer divides it per task by that task's units into `StepRecord::task_losses`.
pub const TASK_LOSS: &str = "task_loss";

/// One micro-batch's loss and metrics.
pub struct ObjectiveLoss {
    /// The summed loss, its unit count and the gradient sink of checkpointed blocks.
    pub loss: LossSum,
    /// Named metrics summed over the same units (`("correct", 3.0)`); the trainer reports each
    /// per unit of the step (`accuracy` = correct / units).
    pub metrics: Vec<(&'static str, f64)>,
}

impl From<LossSum> for ObjectiveLoss {
    fn from(loss: LossSum) -> Self {
        Self { loss, metrics: Vec::new() }
    }
}

/// Where the trainer's micro-batches come from: batch `index` of the whole run (counting across
/// epochs). It must be a pure function of the index and the seed — the data order of an epoch
/// derived from `(seed, epoch)` — so a resumed run sees the batches an uninterrupted one would.
pub trait BatchSource<B> {
    /// The micro-batch at run-wide position `index`.
    fn batch(&mut self, index: u64) -> Result<B>;
}

/// Batches built one epoch at a time by `make(epoch)` (shuffled by `(seed, epoch)`), the
/// current epoch kept.
pub struct Epochs<B, F: FnMut(u64) -> Result<Vec<B>>> {
    make: F,
    per_epoch: u64,
    epoch: u64,
    batches: Vec<B>,
}

impl<B: Clone, F: FnMut(u64) -> Result<Vec<B>>> Epochs<B, F> {
    /// Builds epoch 0 to learn the number of batches per epoch (every epoch has the same).
    pub fn new(mut make: F) -> Result<Self> {
        let batches = make(0)?;
        if batches.is_empty() {
            return Err(crate::GraftError::Input("the training data gives no batch".into()));
        }
        Ok(Self { per_epoch: batches.len() as u64, make, epoch: 0, batches })
    }

    /// Micro-batches per epoch.
    pub fn per_epoch(&self) -> u64 {
        self.per_epoch
    }
}

impl<B: Clone, F: FnMut(u64) -> Result<Vec<B>>> BatchSource<B> for Epochs<B, F> {
    fn batch(&mut self, index: u64) -> Result<B> {
        let epoch = index / self.per_epoch;
        if epoch != self.epoch {
            self.batches = (self.make)(epoch)?;
            self.epoch = epoch;
        }
        self.batches.get((index % self.per_epoch) as usize).cloned().ok_or_else(|| {
            crate::GraftError::Input(format!(
                "epoch {epoch} has {} batches, not {}",
                self.batches.len(),
                self.per_epoch
            ))
        })
    }
}
