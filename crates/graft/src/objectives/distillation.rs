//! The distillation objective: the student's next-token cross-entropy mixed with a divergence
//! from a frozen teacher's distribution at every supervised position (`ops::lm_head_kd`), plus,
//! when asked, a hidden-state term ([`HiddenMatch`]). The teacher runs through the inference path
//! without a graph; only the student (and the hidden-state projections) train. With
//! [`OnPolicy`], a share of the steps trains on the student's own samples instead of the data's
//! completions, on the divergence alone.

use super::hidden_match::HiddenMatch;
use super::on_policy::OnPolicy;
use crate::adapters::lora::DropoutClock;
use crate::data::Batch;
use crate::models::llama::{Llama, Pass, SupervisedRows};
use crate::ops::{self, KdSpec};
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup, StepGeneration};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor, Var};
use std::sync::{Arc, Mutex};

/// Distillation of `teacher` into `student`, training `vars` of the student. Reports `ce` and
/// `kd` (the two terms of the loss, per supervised token) as metrics, and `hidden` with a
/// hidden-state term; on-policy steps report `kd` (and `hidden`) only.
pub struct Distillation<'a> {
    student: &'a Llama,
    teacher: &'a Llama,
    vars: Vec<(String, Var)>,
    clock: Option<Arc<DropoutClock>>,
    spec: KdSpec,
    hidden: Option<HiddenMatch>,
    on_policy: Option<OnPolicy>,
    /// What the current step generated (read and reset by `take_generation`).
    generation: Mutex<StepGeneration>,
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
        require_plain_head(student)?;
        let (s, t) = (student.config().vocab_size, teacher.config().vocab_size);
        if s != t {
            return Err(vocab_mismatch(t, s));
        }
        Ok(Self {
            student,
            teacher,
            vars,
            clock,
            spec,
            hidden: None,
            on_policy: None,
            generation: Mutex::new(StepGeneration::default()),
        })
    }

    /// Trains a share of the steps on the student's own samples (`on_policy`); a share of 0
    /// changes nothing, not even `metrics.jsonl`.
    pub fn with_on_policy(mut self, on_policy: OnPolicy) -> Self {
        self.on_policy = Some(on_policy).filter(|o| o.share > 0.0);
        self
    }

    /// `batch`, or its on-policy version when `micro_step` belongs to an on-policy step: the
    /// student samples with dropout off (no gradient flows through the samples), then dropout is
    /// back on.
    fn batch_for(&self, batch: &Batch, micro_step: u64) -> Result<Option<Batch>> {
        let Some(on_policy) = self.on_policy.as_ref().filter(|o| o.micro_step_is_on_policy(micro_step)) else {
            return Ok(None);
        };
        self.set_training(false);
        let rebuilt = on_policy.rebuild(self.student, batch, micro_step);
        self.set_training(true);
        let rebuilt = rebuilt?;
        let mut generation = self.generation.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        generation.on_policy = true;
        generation.tokens += rebuilt.generated as u64;
        Ok(Some(rebuilt.batch))
    }

    /// Adds the hidden-state term `hidden` (its layers checked against both models).
    pub fn with_hidden(mut self, hidden: HiddenMatch) -> Result<Self> {
        for (t, s) in &hidden.pairs {
            for (who, layer, model) in [("teacher", t, self.teacher), ("student", s, self.student)] {
                let n = model.layers().len();
                if *layer == 0 || *layer > n {
                    return Err(GraftError::Input(format!(
                        "config key `distill.hidden_layers`: {who} layer {layer} asked for, but the {who} has {n} \
                         decoder blocks (layers 1..={n})"
                    )));
                }
            }
        }
        self.hidden = Some(hidden);
        Ok(self)
    }
}

/// What the tokenizer refusals suggest for a teacher with another tokenizer.
pub const CROSS_TOKENIZER_HINT: &str = "for a teacher with another tokenizer set distill.loss = \"uld\" \
     (Universal Logit Distillation, which compares the two distributions sorted, on paired answer tokens), or \
     use sequence-level distillation (the teacher's answers as training text: graft data teacher-answers)";

/// The error of a teacher and student whose vocabularies differ (`teacher`, `student` ids).
pub fn vocab_mismatch(teacher: usize, student: usize) -> GraftError {
    GraftError::Input(format!(
        "the teacher's vocabulary has {teacher} tokens and the student's {student}: logit distillation compares \
         the two distributions token by token and needs one shared tokenizer; {CROSS_TOKENIZER_HINT}"
    ))
}

/// The sum of `t`'s elements as an f64 (a metric).
pub(crate) fn sum(t: &Tensor) -> Result<f64> {
    Ok(t.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl Objective for Distillation<'_> {
    type Batch = Batch;

    fn param_groups(&self) -> Vec<ParamGroup> {
        let mut groups = vec![ParamGroup::new("model", self.vars.clone())];
        let projections = self.hidden.as_ref().map(|h| h.named_vars()).unwrap_or_default();
        if !projections.is_empty() {
            groups.push(ParamGroup::new("projection", projections));
        }
        groups
    }

    fn loss(&self, batch: &Batch, micro_step: u64) -> Result<ObjectiveLoss> {
        let rebuilt = self.batch_for(batch, micro_step)?;
        let on_policy = rebuilt.is_some();
        let batch = rebuilt.as_ref().unwrap_or(batch);
        // On the student's own samples the cross-entropy would train it towards what it already
        // does: the divergence alone is the loss (TRL's GKD).
        let spec = if on_policy { KdSpec { kd_ratio: 1.0, ..self.spec } } else { self.spec };
        if let Some(c) = &self.clock {
            c.set_step(micro_step);
        }
        let (s_layers, t_layers) =
            self.hidden.as_ref().map(|h| (h.student_layers(), h.teacher_layers())).unwrap_or_default();
        let (hidden, s_taps) = self.student.hidden_states_tapped(&batch.ids, None, Pass::Train, &s_layers)?;
        let rows = SupervisedRows::of(&hidden, &batch.targets, &batch.mask, self.student.work_dtype())?;
        let (teacher_hidden, t_taps) = self.teacher.hidden_states_tapped(&batch.ids, None, Pass::Infer, &t_layers)?;
        let teacher_hidden = rows.select(&teacher_hidden.detach())?;
        let (Some(head), Some(teacher_head)) = (self.student.head_weight(), self.teacher.head_weight()) else {
            return Err(GraftError::Input("distillation needs LM heads without adapters".into()));
        };
        let kd =
            ops::lm_head_kd(&rows.hidden, &head, &teacher_hidden, &teacher_head, &rows.targets, &rows.mask, &spec)?;
        let mut metrics = if on_policy { vec![] } else { vec![("ce", sum(&kd.ce)?)] };
        metrics.push(("kd", sum(&kd.kd)?));
        let mut total = kd.loss.sum_all()?;
        if let Some(h) = &self.hidden {
            let pick = |taps: &[Tensor]| taps.iter().map(|t| rows.select(t)).collect::<Result<Vec<_>>>();
            let term = h.loss(&pick(&s_taps)?, &pick(&t_taps)?, &rows.mask)?;
            metrics.push(("hidden", sum(&term)?));
            let term = term.to_dtype(total.dtype())?;
            total = (total + term)?;
        }
        let loss = LossSum { sum: total, count: batch.n_targets, sink: self.student.grad_sink() };
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

    fn take_generation(&self) -> Option<StepGeneration> {
        self.on_policy.as_ref()?;
        self.generation.lock().ok().map(|mut g| std::mem::take(&mut *g))
    }
}

/// The student's LM head is fused with the distillation loss, so it must be the plain weight: an
/// adapter on `lm_head` is refused with what to change.
pub(crate) fn require_plain_head(student: &Llama) -> Result<()> {
    if student.head_weight().is_none() {
        return Err(GraftError::Input(
            "distillation fuses the student's LM head with the loss: remove `lm_head` from adapter.targets".into(),
        ));
    }
    Ok(())
}
