//! The causal-LM objective: summed next-token negative log-likelihood over the supervised
//! positions of a batch (the LM head only ever sees those rows, in chunks), with LoRA dropout
//! masks drawn from the micro-step.

use crate::adapters::lora::DropoutClock;
use crate::data::Batch;
use crate::models::llama::{Llama, Pass};
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::Result;
use candle_core::Var;
use std::sync::Arc;

/// Summed next-token loss of a batch over its supervised positions.
pub fn causal_lm_loss(model: &Llama, batch: &Batch) -> Result<LossSum> {
    let nll = model.token_nll(&batch.ids, &batch.targets, &batch.mask, Pass::Train)?;
    Ok(LossSum { sum: nll.sum_all()?, count: batch.n_targets, sink: model.grad_sink() })
}

/// Next-token prediction on `model`, training `vars` (adapter factors, a soft prompt, or
/// weights of the model itself).
pub struct CausalLm<'a> {
    model: &'a Llama,
    vars: Vec<(String, Var)>,
    /// LoRA's dropout switch and micro-step, when LoRA trains with dropout.
    clock: Option<Arc<DropoutClock>>,
}

impl<'a> CausalLm<'a> {
    /// The objective over `vars` of `model`; `clock` is the LoRA set's dropout clock.
    pub fn new(model: &'a Llama, vars: Vec<(String, Var)>, clock: Option<Arc<DropoutClock>>) -> Self {
        Self { model, vars, clock }
    }
}

impl Objective for CausalLm<'_> {
    type Batch = Batch;

    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup::new("model", self.vars.clone())]
    }

    fn loss(&self, batch: &Batch, micro_step: u64) -> Result<ObjectiveLoss> {
        if let Some(c) = &self.clock {
            c.set_step(micro_step);
        }
        Ok(causal_lm_loss(self.model, batch)?.into())
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
