//! Distillation across tokenizers: the student's next-token cross-entropy on every supervised
//! position, mixed with the Universal Logit Distillation distance (`ops::Divergence::Uld`) from
//! the teacher's distribution at the teacher position paired with it ([`token_pairing`]). The
//! teacher reads its own rendering of the same examples through the inference path, without a
//! graph; only the student trains.
//!
//! [`token_pairing`]: super::token_pairing

use super::token_pairing::PairedBatch;
use crate::adapters::lora::DropoutClock;
use crate::models::llama::{Llama, Pass, SupervisedRows};
use crate::ops::{self, KdSpec};
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor, Var};
use std::sync::Arc;

/// Cross-tokenizer distillation of `teacher` into `student`, training `vars` of the student.
/// Reports `ce` and `kd` (the two terms per supervised position; `kd` is 0 at a position without
/// a paired teacher position) and `paired` (the share of supervised positions paired) as metrics.
pub struct CrossDistillation<'a> {
    student: &'a Llama,
    teacher: &'a Llama,
    vars: Vec<(String, Var)>,
    clock: Option<Arc<DropoutClock>>,
    spec: KdSpec,
}

impl<'a> CrossDistillation<'a> {
    /// The objective; `clock` is the student's LoRA dropout clock. `spec` must be a divergence
    /// that compares distributions over different vocabularies (ULD), and the student's LM head
    /// must not carry adapters.
    pub fn new(
        student: &'a Llama,
        teacher: &'a Llama,
        vars: Vec<(String, Var)>,
        clock: Option<Arc<DropoutClock>>,
        spec: KdSpec,
    ) -> Result<Self> {
        super::distillation::require_plain_head(student)?;
        if !spec.divergence.cross_vocabulary() {
            return Err(GraftError::Input(format!(
                "{:?} compares distributions token by token; across tokenizers use distill.loss = \"uld\"",
                spec.divergence
            )));
        }
        Ok(Self { student, teacher, vars, clock, spec })
    }
}

fn sum(t: &Tensor) -> Result<f64> {
    Ok(t.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl Objective for CrossDistillation<'_> {
    type Batch = PairedBatch;

    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup::new("model", self.vars.clone())]
    }

    fn loss(&self, batch: &PairedBatch, micro_step: u64) -> Result<ObjectiveLoss> {
        if let Some(c) = &self.clock {
            c.set_step(micro_step);
        }
        let s = &batch.student;
        let hidden = self.student.hidden_states(&s.ids, None, Pass::Train)?;
        let rows = SupervisedRows::of(&hidden, &s.targets, &s.mask, self.student.work_dtype())?;
        // The student's rows' teacher positions and pairing flags, as `[b, t, 1]` states.
        let per_row = |x: &Tensor| -> Result<Tensor> { Ok(rows.select(&x.unsqueeze(2)?)?.squeeze(1)?) };
        let (pos, paired) = (per_row(&batch.teacher_pos)?, per_row(&batch.paired)?);
        let teacher_hidden = self.teacher.hidden_states(&batch.teacher_ids, None, Pass::Infer)?.detach();
        let (b, t_t, h_t) = teacher_hidden.dims3()?;
        let teacher_rows = teacher_hidden.reshape((b * t_t, h_t))?.index_select(&pos, 0)?;
        let (Some(head), Some(teacher_head)) = (self.student.head_weight(), self.teacher.head_weight()) else {
            return Err(GraftError::Input("distillation needs LM heads without adapters".into()));
        };
        let kd = ops::lm_head_kd_masked(
            &rows.hidden,
            &head,
            &teacher_rows,
            &teacher_head,
            &rows.targets,
            &rows.mask,
            Some(&paired),
            &self.spec,
        )?;
        let metrics = vec![("ce", sum(&kd.ce)?), ("kd", sum(&kd.kd)?), ("paired", batch.n_pairs as f64)];
        let loss = LossSum { sum: kd.loss.sum_all()?, count: s.n_targets, sink: self.student.grad_sink() };
        Ok(ObjectiveLoss { loss, metrics })
    }

    fn batch_size(&self, batch: &PairedBatch) -> usize {
        batch.student.n_tokens
    }

    fn set_training(&self, on: bool) {
        if let Some(c) = &self.clock {
            c.set_training(on);
        }
    }
}
