//! Optimizers written for graft, whose whole state is a list of named tensors so a checkpoint
//! can save it and a resumed run can continue bit for bit (candle-nn's AdamW cannot).

use crate::{GraftError, Result};
use candle_core::{Tensor, Var};

/// AdamW hyperparameters (torch.optim.AdamW semantics: decoupled weight decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay β₁.
    pub beta1: f64,
    /// Second-moment decay β₂.
    pub beta2: f64,
    /// Denominator ε.
    pub eps: f64,
    /// Decoupled weight decay λ (`p ← p − lr·λ·p`).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Which update rule, with its hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// AdamW.
    AdamW(AdamWConfig),
    /// SGD with momentum μ (heavy ball, torch semantics) and decoupled weight decay.
    Sgd {
        /// Momentum μ (0 = plain SGD).
        momentum: f64,
        /// Weight decay, added to the gradient as in torch.optim.SGD.
        weight_decay: f64,
    },
}

/// An optimizer over a fixed list of named variables.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    params: Vec<(String, Var)>,
    /// AdamW: first moments; SGD: momentum buffers.
    m: Vec<Tensor>,
    /// AdamW: second moments (empty for SGD).
    v: Vec<Tensor>,
    step: u64,
}

impl Optimizer {
    /// An optimizer with zeroed state for `params`.
    pub fn new(kind: OptimizerKind, params: Vec<(String, Var)>) -> Result<Self> {
        let zeros = |p: &Var| p.as_tensor().zeros_like();
        let m = params.iter().map(|(_, p)| zeros(p)).collect::<candle_core::Result<Vec<_>>>()?;
        let v = match kind {
            OptimizerKind::AdamW(_) => params.iter().map(|(_, p)| zeros(p)).collect::<candle_core::Result<Vec<_>>>()?,
            OptimizerKind::Sgd { .. } => Vec::new(),
        };
        Ok(Self { kind, params, m, v, step: 0 })
    }

    /// The variables being optimised, with their names.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Number of updates applied so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Applies one update with learning rate `lr`; `grads[i]` is the gradient of `params()[i]`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(GraftError::Input(format!("{} gradients for {} parameters", grads.len(), self.params.len())));
        }
        self.step += 1;
        let t = self.step as i32;
        for (i, ((_, p), g)) in self.params.iter().zip(grads).enumerate() {
            let g = g.to_dtype(p.dtype())?;
            match self.kind {
                OptimizerKind::AdamW(c) => {
                    let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
                    let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                    let bc1 = 1.0 - c.beta1.powi(t);
                    let bc2 = 1.0 - c.beta2.powi(t);
                    let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
                    let mut next = p.as_tensor().clone();
                    if c.weight_decay != 0.0 {
                        next = (next * (1.0 - lr * c.weight_decay))?;
                    }
                    let next = (next - (m.div(&denom)? * (lr / bc1))?)?;
                    p.set(&next)?;
                    self.m[i] = m;
                    self.v[i] = v;
                }
                OptimizerKind::Sgd { momentum, weight_decay } => {
                    let g = if weight_decay != 0.0 { (g + (p.as_tensor() * weight_decay)?)? } else { g };
                    let buf = if momentum != 0.0 && self.step > 1 { ((&self.m[i] * momentum)? + &g)? } else { g };
                    p.set(&(p.as_tensor() - (&buf * lr)?)?)?;
                    self.m[i] = buf;
                }
            }
        }
        Ok(())
    }

    /// The whole state as named tensors (moments and the step counter), for checkpoints.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.m.len() + self.v.len() + 1);
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("{name}.m"), self.m[i].clone()));
            if let Some(v) = self.v.get(i) {
                out.push((format!("{name}.v"), v.clone()));
            }
        }
        let dev = self.params.first().map(|(_, p)| p.device().clone()).unwrap_or(candle_core::Device::Cpu);
        out.push(("__step__".into(), Tensor::new(&[self.step as i64], &dev)?));
        Ok(out)
    }

    /// Restores state written by [`Optimizer::state`]; every moment must be present with the
    /// parameter's shape.
    pub fn load_state(&mut self, state: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        let get = |k: &str, like: &Var| -> Result<Tensor> {
            let t = state.get(k).ok_or_else(|| GraftError::Input(format!("optimizer state lacks `{k}`")))?;
            if t.dims() != like.dims() {
                return Err(GraftError::Input(format!(
                    "optimizer state `{k}` has shape {:?}, expected {:?}",
                    t.dims(),
                    like.dims()
                )));
            }
            Ok(t.to_device(like.device())?.to_dtype(like.dtype())?)
        };
        for (i, (name, p)) in self.params.iter().enumerate() {
            self.m[i] = get(&format!("{name}.m"), p)?;
            if i < self.v.len() {
                self.v[i] = get(&format!("{name}.v"), p)?;
            }
        }
        let step = state.get("__step__").ok_or_else(|| GraftError::Input("optimizer state lacks `__step__`".into()))?;
        self.step = step.to_vec1::<i64>()?.first().copied().unwrap_or(0) as u64;
        Ok(())
    }
}
