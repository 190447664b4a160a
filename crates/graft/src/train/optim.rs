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

/// A named set of variables trained together: at the schedule's learning rate times
/// `lr_scale`, with its own weight decay when `weight_decay` is set (e.g. a fresh head at full
/// rate beside pretrained blocks at a hundredth of it, without decay).
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// Name of the group (`head`, `blocks`, ...), for messages.
    pub name: String,
    /// The variables, by their checkpoint names (unique across groups).
    pub vars: Vec<(String, Var)>,
    /// Multiplier of the scheduled learning rate (1 = the schedule's rate).
    pub lr_scale: f64,
    /// Weight decay of this group; `None` keeps the optimizer's.
    pub weight_decay: Option<f64>,
}

impl ParamGroup {
    /// A group at the schedule's rate with the optimizer's weight decay.
    pub fn new(name: &str, vars: Vec<(String, Var)>) -> Self {
        Self { name: name.into(), vars, lr_scale: 1.0, weight_decay: None }
    }
}

/// An optimizer over a fixed list of named variables, in one or more [`ParamGroup`]s. The
/// groups share one step counter; moments are kept per variable and saved under its name, so a
/// checkpoint restores every group exactly.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    params: Vec<(String, Var)>,
    /// Per variable: its group's learning-rate multiplier and weight decay.
    rule: Vec<(f64, f64)>,
    /// AdamW: first moments; SGD: momentum buffers.
    m: Vec<Tensor>,
    /// AdamW: second moments (empty for SGD).
    v: Vec<Tensor>,
    step: u64,
}

impl Optimizer {
    /// An optimizer with zeroed state for `params` (one group at the schedule's rate).
    pub fn new(kind: OptimizerKind, params: Vec<(String, Var)>) -> Result<Self> {
        Self::with_groups(kind, vec![ParamGroup::new("params", params)])
    }

    /// An optimizer with zeroed state over `groups`; a variable name may appear only once.
    pub fn with_groups(kind: OptimizerKind, groups: Vec<ParamGroup>) -> Result<Self> {
        let base_decay = match kind {
            OptimizerKind::AdamW(c) => c.weight_decay,
            OptimizerKind::Sgd { weight_decay, .. } => weight_decay,
        };
        let (mut params, mut rule) = (Vec::new(), Vec::new());
        let mut seen = std::collections::HashSet::new();
        for g in groups {
            let decay = g.weight_decay.unwrap_or(base_decay);
            let usable = g.lr_scale.is_finite() && g.lr_scale > 0.0 && decay.is_finite() && decay >= 0.0;
            if !usable {
                return Err(GraftError::Input(format!(
                    "parameter group `{}`: the learning-rate scale ({}) must be positive and the weight decay ({decay}) 0 or more",
                    g.name, g.lr_scale
                )));
            }
            for (name, var) in g.vars {
                if !seen.insert(name.clone()) {
                    return Err(GraftError::Input(format!("variable `{name}` is in two parameter groups")));
                }
                params.push((name, var));
                rule.push((g.lr_scale, decay));
            }
        }
        let zeros = |p: &Var| p.as_tensor().zeros_like();
        let m = params.iter().map(|(_, p)| zeros(p)).collect::<candle_core::Result<Vec<_>>>()?;
        let v = match kind {
            OptimizerKind::AdamW(_) => params.iter().map(|(_, p)| zeros(p)).collect::<candle_core::Result<Vec<_>>>()?,
            OptimizerKind::Sgd { .. } => Vec::new(),
        };
        Ok(Self { kind, params, rule, m, v, step: 0 })
    }

    /// The variables being optimised, with their names.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Applies one update at learning rate `lr` (times each group's scale); `grads[i]` is the
    /// gradient of `params()[i]`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(GraftError::Input(format!("{} gradients for {} parameters", grads.len(), self.params.len())));
        }
        self.step += 1;
        let t = self.step as i32;
        for (i, ((_, p), g)) in self.params.iter().zip(grads).enumerate() {
            let g = g.to_dtype(p.dtype())?;
            let (scale, weight_decay) = self.rule[i];
            let lr = lr * scale;
            match self.kind {
                OptimizerKind::AdamW(c) => {
                    let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
                    let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                    let bc1 = 1.0 - c.beta1.powi(t);
                    let bc2 = 1.0 - c.beta2.powi(t);
                    let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
                    let mut next = p.as_tensor().clone();
                    if weight_decay != 0.0 {
                        next = (next * (1.0 - lr * weight_decay))?;
                    }
                    let next = (next - (m.div(&denom)? * (lr / bc1))?)?;
                    p.set(&next)?;
                    self.m[i] = m;
                    self.v[i] = v;
                }
                OptimizerKind::Sgd { momentum, .. } => {
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
