//! Distillation against a teacher cache: the student's next-token cross-entropy mixed with a
//! divergence from the teacher's cached top-`k` distribution at every supervised position
//! (`ops::lm_head_kd_sparse`: the top-k ids and one remainder bucket). No teacher is
//! loaded or run; each batch row finds its positions in the cache by its content
//! ([`row_key`](crate::recipes::distill_cache::row_key)), so shuffling, epochs and resume see the
//! same teacher values.

use super::distillation::sum;
use crate::adapters::lora::DropoutClock;
use crate::data::Batch;
use crate::models::llama::{Llama, Pass, SupervisedRows};
use crate::ops::{self, KdSpec, SparseTeacher};
use crate::recipes::distill_cache::CachedRows;
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::{GraftError, Result};
use candle_core::Tensor;
use std::sync::Arc;

/// Distillation of the cached teacher `cache` into `student`, training `vars`. Reports `ce` and
/// `kd` as [`Distillation`](super::distillation::Distillation) does.
pub struct CachedDistillation<'a> {
    student: &'a Llama,
    cache: CachedRows,
    vars: Vec<(String, candle_core::Var)>,
    clock: Option<Arc<DropoutClock>>,
    spec: KdSpec,
}

impl<'a> CachedDistillation<'a> {
    /// The objective; `clock` is the student's LoRA dropout clock. The student's LM head must not
    /// carry adapters, and the cache's `k` must fit its vocabulary.
    pub fn new(
        student: &'a Llama,
        cache: CachedRows,
        vars: Vec<(String, candle_core::Var)>,
        clock: Option<Arc<DropoutClock>>,
        spec: KdSpec,
    ) -> Result<Self> {
        super::distillation::require_plain_head(student)?;
        let vocab = student.config().vocab_size;
        if cache.k() > vocab {
            return Err(GraftError::Input(format!(
                "the teacher cache keeps {} ids per position but the student's vocabulary has {vocab}",
                cache.k()
            )));
        }
        Ok(Self { student, cache, vars, clock, spec })
    }

    /// A stand-in teacher for `n` rows none of which is supervised (masked out of the loss, but
    /// finite): uniform over the vocabulary.
    fn uniform(&self, n: usize, device: &candle_core::Device) -> Result<SparseTeacher> {
        let (k, vocab) = (self.cache.k().max(1), self.student.config().vocab_size);
        let ids = Tensor::arange(0u32, k as u32, device)?.unsqueeze(0)?.broadcast_as((n, k))?.contiguous()?;
        let log_probs = Tensor::full(-(vocab as f32).ln(), (n, k), device)?;
        let rest = if k < vocab { ((vocab - k) as f32 / vocab as f32).ln() } else { -1e4 };
        Ok(SparseTeacher { ids, log_probs, rest: Tensor::full(rest, n, device)? })
    }
}

impl Objective for CachedDistillation<'_> {
    type Batch = Batch;

    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup::new("model", self.vars.clone())]
    }

    fn loss(&self, batch: &Batch, micro_step: u64) -> Result<ObjectiveLoss> {
        if let Some(c) = &self.clock {
            c.set_step(micro_step);
        }
        let hidden = self.student.hidden_states(&batch.ids, None, Pass::Train)?;
        let rows = SupervisedRows::of(&hidden, &batch.targets, &batch.mask, self.student.work_dtype())?;
        let teacher = match self.cache.for_batch(&batch.ids, &batch.mask)? {
            Some(teacher) => teacher,
            None => self.uniform(rows.hidden.dims2()?.0, rows.hidden.device())?,
        };
        let Some(head) = self.student.head_weight() else {
            return Err(GraftError::Input("distillation needs an LM head without adapters".into()));
        };
        let kd = ops::lm_head_kd_sparse(&rows.hidden, &head, &teacher, &rows.targets, &rows.mask, &self.spec)?;
        let metrics = vec![("ce", sum(&kd.ce)?), ("kd", sum(&kd.kd)?)];
        let loss = LossSum { sum: kd.loss.sum_all()?, count: batch.n_targets, sink: self.student.grad_sink() };
        Ok(ObjectiveLoss { loss, metrics })
    }

    fn batch_size(&self, batch: &Batch) -> usize {
        batch.n_tokens
    }

    fn set_training(&self, on: bool) {
        if let Some(c) = &self.clock {
            c.set_training(on);
        }
    }
}
