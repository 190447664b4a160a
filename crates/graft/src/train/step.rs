//! One optimizer step: accumulate gradients over micro-batches normalised by the total number
//! of loss tokens ([`accumulate`]), check they are finite, clip, update ([`clip_and_apply`]).
//! The two halves are apart so a step that combines several accumulations (PCGrad's per-task
//! gradients, `multitask::pcgrad::pcgrad_step`) shares the same tail.

use super::optim::Optimizer;
use crate::{GraftError, Result};
use candle_core::{DType, Tensor, Var};

/// What a training objective reports for one micro-batch: the summed loss (a scalar tensor with
/// a graph back to the trainable variables) and how many targets it sums over.
pub struct LossSum {
    /// Sum of per-target losses.
    pub sum: Tensor,
    /// Number of targets in the sum.
    pub count: usize,
    /// Where gradient-checkpointed parts of the model leave their parameters' gradients during
    /// backward (merged with the gradients backward returns).
    pub sink: Option<std::sync::Arc<crate::ops::GradSink>>,
}

/// Measurements of one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean loss per target over the accumulated micro-batches.
    pub loss: f64,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
    /// Targets the step was normalised by.
    pub targets: usize,
}

/// One step's gradients before the update: one per parameter (zeros where the loss does not
/// reach), already divided by the units, with the loss they came from.
pub struct StepGrads {
    /// Gradient of each optimizer parameter, in `Optimizer::params` order.
    pub grads: Vec<Tensor>,
    /// Whether any micro-batch's loss reached each parameter (an unreached one is not updated:
    /// a per-task adapter of a task the step did not train).
    pub reached: Vec<bool>,
    /// Mean loss per target over the accumulated micro-batches.
    pub loss: f64,
    /// Targets the gradients were divided by.
    pub targets: usize,
}

/// Runs `micro_batches` micro-batches through `loss_of`, sums their gradients of `params`, divides by the
/// total target count (so `grad_accum × batch` equals one big batch, not a mean of means).
///
/// A non-finite loss stops with [`GraftError::Diverged`] naming `step`; no targets at all is an
/// input error.
pub fn accumulate(
    step: u64,
    params: &[Var],
    micro_batches: usize,
    mut loss_of: impl FnMut(usize) -> Result<LossSum>,
) -> Result<StepGrads> {
    let mut acc: Vec<Option<Tensor>> = vec![None; params.len()];
    let (mut total, mut count) = (0f64, 0usize);
    for micro in 0..micro_batches {
        let l = loss_of(micro)?;
        let value = l.sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Err(GraftError::Diverged {
                unit: "step",
                step,
                what: format!("loss is {value} (micro-batch {micro})"),
                hint: "lower train.lr or check the data; the last checkpoint is intact",
            });
        }
        total += value;
        count += l.count;
        let mut grads = l.sum.backward()?;
        if let Some(sink) = &l.sink {
            sink.drain_into(&mut grads)?;
        }
        for (slot, p) in acc.iter_mut().zip(params) {
            if let Some(g) = grads.get(p.as_tensor()) {
                // Detached: the gradient must not keep the step's graph alive.
                let g = g.detach();
                *slot = Some(match slot.take() {
                    Some(prev) => (prev + g)?,
                    None => g,
                });
            }
        }
    }
    if count == 0 {
        return Err(GraftError::Input(format!("step {step}: the batch has no supervised tokens")));
    }
    let reached: Vec<bool> = acc.iter().map(Option::is_some).collect();
    let mut grads = Vec::with_capacity(params.len());
    for (slot, p) in acc.into_iter().zip(params) {
        grads.push(match slot {
            Some(g) => (g / count as f64)?,
            None => p.as_tensor().zeros_like()?,
        });
    }
    Ok(StepGrads { grads, reached, loss: total / count as f64, targets: count })
}

/// The tail of every step: checks that the gradients' global L2 norm is finite, clips it to
/// `max_grad_norm` (0 = off) and applies one update at `lr` to the parameters the loss
/// `reached`; returns the norm before clipping.
///
/// A non-finite norm stops with [`GraftError::Diverged`] naming `step`, the weights untouched.
pub fn clip_and_apply(
    step: u64,
    optimizer: &mut Optimizer,
    mut grads: Vec<Tensor>,
    reached: &[bool],
    max_grad_norm: f64,
    lr: f64,
) -> Result<f64> {
    let mut sq = 0f64;
    for g in &grads {
        // Squares summed in the gradient's own precision (f32, or f64 for f64), tensor by tensor, then
        // accumulated in f64: no f64 copy of a weight-sized gradient.
        let work = if g.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
        sq += g.to_dtype(work)?.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    }
    let grad_norm = sq.sqrt();
    if !grad_norm.is_finite() {
        return Err(GraftError::Diverged {
            unit: "step",
            step,
            what: format!("gradient norm is {grad_norm}"),
            hint: "lower train.lr; the last checkpoint is intact",
        });
    }
    if max_grad_norm > 0.0 && grad_norm > max_grad_norm {
        let factor = max_grad_norm / (grad_norm + 1e-6);
        grads = grads.into_iter().map(|g| (g * factor).map_err(Into::into)).collect::<Result<_>>()?;
    }
    optimizer.step_reached(&grads, reached, lr)?;
    Ok(grad_norm)
}

/// One optimizer step: [`accumulate`] the micro-batches' gradients, then [`clip_and_apply`].
///
/// A non-finite loss or gradient stops with [`GraftError::Diverged`] naming the step; the
/// weights are left untouched by that step.
pub fn accumulate_and_step(
    step: u64,
    optimizer: &mut Optimizer,
    micro_batches: usize,
    loss_of: impl FnMut(usize) -> Result<LossSum>,
    max_grad_norm: f64,
    lr: f64,
) -> Result<StepStats> {
    let params: Vec<Var> = optimizer.params().iter().map(|(_, v)| v.clone()).collect();
    let g = accumulate(step, &params, micro_batches, loss_of)?;
    let grad_norm = clip_and_apply(step, optimizer, g.grads, &g.reached, max_grad_norm, lr)?;
    Ok(StepStats { loss: g.loss, grad_norm, targets: g.targets })
}
