//! The distillation objective: the student's next-token cross-entropy mixed with a divergence
//! from a frozen teacher's distribution at every supervised position (`ops::lm_head_kd`). The
//! teacher runs through the inference path without a graph; only the student trains.

use crate::adapters::lora::DropoutClock;
use crate::data::Batch;
use crate::models::llama::{Llama, Pass, SupervisedRows};
use crate::ops::{self, KdSpec};
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor, Var};
use std::sync::Arc;

/// Distillation of `teacher` into `student`, training `vars` of the student. Reports `ce` and
/// `kd` (the two terms of the loss, per supervised token) as metrics.
pub struct Distillation<'a> {
    student: &'a Llama,
    teacher: &'a Llama,
    vars: Vec<(String, Var)>,
    clock: Option<Arc<DropoutClock>>,
    spec: KdSpec,
}

impl<'a> Distillation<'a> {
    /// The objective; `clock` is the student's LoRA dropout clock. The two models must share one
    /// vocabulary (the recipe checks their tokenizers first) and the student's LM head must not
    /// carry adapters.
    pub fn new(
        student: &'a Llama,
        teacher: &'a Llama,
        vars: Vec<(String, Var)>,
        clock: Option<Arc<DropoutClock>>,
        spec: KdSpec,
    ) -> Result<Self> {
        if student.head_weight().is_none() {
            return Err(GraftError::Input(
                "distillation fuses the student's LM head with the loss: remove `lm_head` from adapter.targets".into(),
            ));
        }
        let (s, t) = (student.config().vocab_size, teacher.config().vocab_size);
        if s != t {
            return Err(vocab_mismatch(t, s));
        }
        Ok(Self { student, teacher, vars, clock, spec })
    }
}

/// The error of a teacher and student whose vocabularies differ (`teacher`, `student` ids).
pub fn vocab_mismatch(teacher: usize, student: usize) -> GraftError {
    GraftError::Input(format!(
        "the teacher's vocabulary has {teacher} tokens and the student's {student}: logit distillation compares \
         the two distributions token by token and needs one shared tokenizer; for a teacher with another \
         tokenizer use sequence-level distillation (the teacher's answers as training text, the cross-tokenizer route)"
    ))
}

fn sum(t: &Tensor) -> Result<f64> {
    Ok(t.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl Objective for Distillation<'_> {
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
        let teacher_hidden = rows.select(&self.teacher.hidden_states(&batch.ids, None, Pass::Infer)?.detach())?;
        let (Some(head), Some(teacher_head)) = (self.student.head_weight(), self.teacher.head_weight()) else {
            return Err(GraftError::Input("distillation needs LM heads without adapters".into()));
        };
        let kd = ops::lm_head_kd(
            &rows.hidden,
            &head,
            &teacher_hidden,
            &teacher_head,
            &rows.targets,
            &rows.mask,
            &self.spec,
        )?;
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
