//! Optimizers written for graft, whose whole state is a list of named tensors so a checkpoint
//! can save it and a resumed run can continue bit for bit (candle-nn's AdamW cannot).

use crate::ops::{adamw_in_place, AdamWUpdate};
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
/// groups share one step counter; moments and the count of updates are kept per variable and
/// saved under its name, so a checkpoint restores every group exactly. A variable a step's loss
/// does not reach is left as it is, moments and count included (torch skips a parameter whose
/// gradient is `None`): a per-task adapter does not drift while other tasks train.
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
    /// Per variable: updates it received (its AdamW bias-correction step).
    updates: Vec<u64>,
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
        let updates = vec![0; params.len()];
        Ok(Self { kind, params, rule, m, v, step: 0, updates })
    }

    /// The variables being optimised, with their names.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Applies one update at learning rate `lr` (times each group's scale); `grads[i]` is the
    /// gradient of `params()[i]`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step_reached(grads, &vec![true; grads.len()], lr)
    }

    /// [`Optimizer::step`] where `reached[i]` says whether the loss reached `params()[i]`; an
    /// unreached variable is skipped (no update, no weight decay, its moments unchanged).
    pub fn step_reached(&mut self, grads: &[Tensor], reached: &[bool], lr: f64) -> Result<()> {
        if grads.len() != self.params.len() || reached.len() != self.params.len() {
            return Err(GraftError::Input(format!("{} gradients for {} parameters", grads.len(), self.params.len())));
        }
        self.step += 1;
        for (i, ((_, p), g)) in self.params.iter().zip(grads).enumerate() {
            if !reached[i] {
                continue;
            }
            self.updates[i] += 1;
            let t = self.updates[i] as i32;
            // A gradient computed from tracked activations records how it was made; kept in a
            // moment, that history (every activation of the step) would chain from step to step.
            let g = g.detach().to_dtype(p.dtype())?;
            let (scale, weight_decay) = self.rule[i];
            let lr = lr * scale;
            match self.kind {
                OptimizerKind::AdamW(c) => {
                    let u = AdamWUpdate { beta1: c.beta1, beta2: c.beta2, eps: c.eps, lr, weight_decay, t };
                    if !adamw_in_place(p.as_tensor(), &self.m[i], &self.v[i], &g, &u)? {
                        let (next, m, v) = adamw_tensor(p.as_tensor(), &self.m[i], &self.v[i], &g, &u)?;
                        p.set(&next)?;
                        self.m[i] = m;
                        self.v[i] = v;
                    }
                }
                OptimizerKind::Sgd { momentum, .. } => {
                    let g = if weight_decay != 0.0 { (g + (p.as_tensor() * weight_decay)?)? } else { g };
                    let buf = if momentum != 0.0 && t > 1 { ((&self.m[i] * momentum)? + &g)? } else { g };
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
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("{name}.updates"), Tensor::new(&[self.updates[i] as i64], &dev)?));
        }
        out.push(("__step__".into(), Tensor::new(&[self.step as i64], &dev)?));
        Ok(out)
    }

    /// Restores state written by [`Optimizer::state`]; every moment must be present with the
    /// parameter's shape. A variable without its count of updates (state written before counts
    /// were kept) counts every step.
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
            // A copy of its own: AdamW updates its moments in place.
            Ok(t.to_device(like.device())?.to_dtype(like.dtype())?.copy()?)
        };
        for (i, (name, p)) in self.params.iter().enumerate() {
            self.m[i] = get(&format!("{name}.m"), p)?;
            if i < self.v.len() {
                self.v[i] = get(&format!("{name}.v"), p)?;
            }
        }
        let step = state.get("__step__").ok_or_else(|| GraftError::Input("optimizer state lacks `__step__`".into()))?;
        self.step = step.to_vec1::<i64>()?.first().copied().unwrap_or(0) as u64;
        for (i, (name, _)) in self.params.iter().enumerate() {
            self.updates[i] = match state.get(&format!("{name}.updates")) {
                Some(n) => n.to_vec1::<i64>()?.first().copied().unwrap_or(0) as u64,
                None => self.step,
            };
        }
        Ok(())
    }
}

/// One AdamW update of `p` with moments `m`, `v` and gradient `g` from tensor ops: the next
/// value and moments, new tensors (other devices and dtypes; [`adamw_in_place`] gives the same
/// bits on the CPU without the temporaries).
fn adamw_tensor(p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, u: &AdamWUpdate) -> Result<(Tensor, Tensor, Tensor)> {
    let m = ((m * u.beta1)? + (g * (1.0 - u.beta1))?)?;
    let v = ((v * u.beta2)? + (g.sqr()? * (1.0 - u.beta2))?)?;
    let bc1 = 1.0 - u.beta1.powi(u.t);
    let bc2 = 1.0 - u.beta2.powi(u.t);
    let denom = ((v.sqrt()? / bc2.sqrt())? + u.eps)?;
    let mut next = p.clone();
    if u.weight_decay != 0.0 {
        next = (next * (1.0 - u.lr * u.weight_decay))?;
    }
    let next = (next - (m.div(&denom)? * (u.lr / bc1))?)?;
    Ok((next, m, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn var(values: &[f64]) -> Var {
        Var::from_tensor(&Tensor::new(values, &Device::Cpu).unwrap()).unwrap()
    }

    fn values(v: &Var) -> Vec<f64> {
        v.as_tensor().to_vec1().unwrap()
    }

    #[test]
    fn moments_do_not_hold_on_to_the_graph_a_gradient_came_from() {
        // The gradient of w in (w · x) is x, and with x a variable it records that op: a moment
        // built from it would keep x (and, in a network, every activation of the step) alive
        // and chain each step's graph to the next.
        for kind in
            [OptimizerKind::AdamW(AdamWConfig::default()), OptimizerKind::Sgd { momentum: 0.9, weight_decay: 0.0 }]
        {
            let (w, x) = (var(&[1.0, 2.0]), var(&[3.0, -1.0]));
            let mut opt = Optimizer::new(kind, vec![("w".into(), w.clone())]).unwrap();
            for _ in 0..2 {
                let grads = (w.as_tensor() * x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
                let g = (grads.get(w.as_tensor()).unwrap() * x.as_tensor()).unwrap();
                assert!(g.track_op(), "the test needs a gradient that records its history");
                opt.step_reached(&[g], &[true], 1e-2).unwrap();
            }
            for (name, t) in opt.state().unwrap() {
                assert!(!t.track_op(), "{kind:?}: {name} keeps the graph of its gradient");
            }
        }
    }

    #[test]
    fn a_variable_the_loss_does_not_reach_is_left_alone_and_later_starts_its_own_bias_correction() {
        let kind = OptimizerKind::AdamW(AdamWConfig { weight_decay: 0.1, ..AdamWConfig::default() });
        let (a, b) = (var(&[1.0, -2.0]), var(&[0.5, 3.0]));
        let mut opt = Optimizer::new(kind, vec![("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
        let g = |x: f64| Tensor::new(&[x, -x], &Device::Cpu).unwrap();
        for _ in 0..3 {
            opt.step_reached(&[g(0.3), g(7.0)], &[true, false], 1e-2).unwrap();
        }
        assert_eq!(values(&b), [0.5, 3.0], "no update and no weight decay while unreached");
        let state: std::collections::HashMap<String, Tensor> = opt.state().unwrap().into_iter().collect();
        assert_eq!(state["b.m"].to_vec1::<f64>().unwrap(), [0.0, 0.0], "moments untouched");
        assert_eq!(state["b.updates"].to_vec1::<i64>().unwrap(), [0]);
        assert_eq!(state["a.updates"].to_vec1::<i64>().unwrap(), [3]);

        // b's first update is a fresh optimizer's first step (bias correction at t = 1), not
        // the fourth.
        opt.step_reached(&[g(0.3), g(7.0)], &[true, true], 1e-2).unwrap();
        let fresh = var(&[0.5, 3.0]);
        let mut one = Optimizer::new(kind, vec![("b".into(), fresh.clone())]).unwrap();
        one.step(&[g(7.0)], 1e-2).unwrap();
        assert_eq!(values(&b), values(&fresh));

        // The counts survive a checkpoint.
        let mut restored =
            Optimizer::new(kind, vec![("a".into(), var(&[0.0, 0.0])), ("b".into(), var(&[0.0, 0.0]))]).unwrap();
        restored.load_state(&opt.state().unwrap().into_iter().collect()).unwrap();
        assert_eq!(restored.updates, [4, 1]);
    }

    /// The in-place kernel gives the tensor form's bits, step after step, with and without
    /// weight decay, in f32 and f64, over a length that is not a whole number of parallel tasks.
    #[test]
    fn the_in_place_update_equals_the_tensor_form_bit_for_bit() {
        use candle_core::DType;
        let n = 150_001;
        let wave = |k: f64| -> Tensor {
            let v: Vec<f64> = (0..n).map(|i| ((i as f64 * 0.0137 + k).sin() * 3.0).powi(3) * 1e-2).collect();
            Tensor::from_vec(v, n, &Device::Cpu).unwrap()
        };
        let bits = |t: &Tensor| -> Vec<u64> {
            t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap().iter().map(|x| x.to_bits()).collect()
        };
        for dtype in [DType::F32, DType::F64] {
            for weight_decay in [0.0, 0.1] {
                let p0 = wave(0.5).to_dtype(dtype).unwrap();
                let (p, m, v) = (p0.copy().unwrap(), p0.zeros_like().unwrap(), p0.zeros_like().unwrap());
                let (mut tp, mut tm, mut tv) = (p0.copy().unwrap(), p0.zeros_like().unwrap(), p0.zeros_like().unwrap());
                for t in 1..=4 {
                    let g = wave(t as f64).to_dtype(dtype).unwrap();
                    let u = AdamWUpdate { beta1: 0.9, beta2: 0.999, eps: 1e-8, lr: 1e-3, weight_decay, t };
                    assert!(adamw_in_place(&p, &m, &v, &g, &u).unwrap(), "{dtype:?}: the kernel applies");
                    (tp, tm, tv) = adamw_tensor(&tp, &tm, &tv, &g, &u).unwrap();
                    assert_eq!(bits(&m), bits(&tm), "{dtype:?} wd {weight_decay} step {t}: first moment");
                    assert_eq!(bits(&v), bits(&tv), "{dtype:?} wd {weight_decay} step {t}: second moment");
                    assert_eq!(bits(&p), bits(&tp), "{dtype:?} wd {weight_decay} step {t}: value");
                }
                assert_ne!(bits(&p), bits(&p0), "the value moved");
            }
        }
        // A dtype the kernel does not take is left to the tensor form.
        let h = wave(0.0).to_dtype(DType::BF16).unwrap();
        let u = AdamWUpdate { beta1: 0.9, beta2: 0.999, eps: 1e-8, lr: 1e-3, weight_decay: 0.0, t: 1 };
        assert!(!adamw_in_place(&h, &h.zeros_like().unwrap(), &h.zeros_like().unwrap(), &h, &u).unwrap());
    }
}
