//! Loss weightings: how the losses of several tasks make one training loss.
//!
//! With `L_i` task `i`'s mean loss:
//!
//! - **equal**: `L = Σ L_i`;
//! - **fixed**: `L = Σ w_i L_i` with given `w_i > 0`;
//! - **uncertainty** (Kendall, Gal & Cipolla 2018): `L = Σ exp(−s_i) L_i + s_i` with a learned
//!   `s_i = log σ_i²` per task, initialised to 0 (weight 1). The paper writes the regression
//!   term as `½ exp(−s_i) L_i + ½ s_i`; the ½ is left out here (as in LibMTL), which halves
//!   nothing but the whole loss's scale, so the optimum `s_i = log L_i` is the same. At fixed
//!   `L_i` the gradient is `∂L/∂s_i = 1 − exp(−s_i) L_i`, so a task with a large loss gets a
//!   small weight `exp(−s_i) → 1/L_i`.
//!
//! The trainer sums losses over units (tokens) and divides the step's gradient by the unit
//! count, so [`LossWeighting::term`] takes a loss *sum* over `units` and returns
//! `exp(−s_i)·sum + s_i·units`: after the trainer's division that is `exp(−s_i) L_i + s_i` for a
//! micro-batch of one task.

use crate::train::ParamGroup;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor, Var};

/// Checkpoint name of the uncertainty weighting's log-variances.
pub const LOG_VARS_NAME: &str = "multitask.log_vars";

/// Which weighting, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Weighting {
    /// Every task's loss with weight 1.
    Equal,
    /// One weight per task (> 0), in the tasks' order.
    Fixed(Vec<f64>),
    /// Learned log-variances `s_i`, trained as a parameter group of their own.
    Uncertainty,
}

/// A [`Weighting`] over named tasks, holding the learned log-variances when it has them.
#[derive(Debug, Clone)]
pub struct LossWeighting {
    weights: Vec<f64>,
    log_vars: Option<Var>,
}

impl LossWeighting {
    /// The weighting of `tasks` (names in the mixture's order); uncertainty weighting creates
    /// `s = 0` for every task on `device` in `dtype` (use f32 or f64: the weights are few and
    /// their precision matters more than their memory).
    ///
    /// Refused with [`GraftError::Input`]: no task, fixed weights whose count is not the tasks'
    /// or a weight that is not a finite number above 0 (naming the task).
    pub fn new(tasks: &[String], weighting: Weighting, device: &Device, dtype: DType) -> Result<Self> {
        if tasks.is_empty() {
            return Err(GraftError::Input("a loss weighting needs at least one task".into()));
        }
        let (weights, log_vars) = match weighting {
            Weighting::Equal => (vec![1.0; tasks.len()], None),
            Weighting::Fixed(w) => {
                if w.len() != tasks.len() {
                    return Err(GraftError::Input(format!(
                        "{} fixed loss weights for {} tasks; give one weight per task",
                        w.len(),
                        tasks.len()
                    )));
                }
                if let Some((name, bad)) = tasks.iter().zip(&w).find(|(_, w)| !(w.is_finite() && **w > 0.0)) {
                    return Err(GraftError::Input(format!(
                        "task `{name}` has loss weight {bad}; weights must be finite numbers above 0 (leave the task out instead of weighting it 0)"
                    )));
                }
                (w, None)
            }
            Weighting::Uncertainty => {
                let s = Var::zeros(tasks.len(), dtype, device)?;
                (vec![1.0; tasks.len()], Some(s))
            }
        };
        Ok(Self { weights, log_vars })
    }

    /// The parameter group of the learned log-variances (`multitask`, without weight decay,
    /// which would pull every `s_i` to 0), or `None` when nothing is learned.
    pub fn param_group(&self) -> Option<ParamGroup> {
        self.log_vars.as_ref().map(|s| {
            let mut group = ParamGroup::new("multitask", vec![(LOG_VARS_NAME.to_string(), s.clone())]);
            group.weight_decay = Some(0.0);
            group
        })
    }

    /// Task `task`'s part of the training loss for a loss `sum` (a scalar tensor) over `units`
    /// units: `w·sum` (equal, fixed) or `exp(−s)·sum + s·units` (uncertainty), in `sum`'s dtype.
    pub fn term(&self, task: usize, sum: &Tensor, units: usize) -> Result<Tensor> {
        let w = *self.weights.get(task).ok_or_else(|| {
            GraftError::Input(format!(
                "task index {task} is out of range: the weighting has {} tasks",
                self.weights.len()
            ))
        })?;
        match &self.log_vars {
            None => Ok((sum * w)?),
            Some(s) => {
                let s = s.as_tensor().get(task)?.to_dtype(sum.dtype())?;
                Ok((sum.mul(&s.neg()?.exp()?)? + (s * units as f64)?)?)
            }
        }
    }

    /// The training loss of mean task losses `losses` (scalar tensors, one per task):
    /// `Σ term(i, L_i, 1)`.
    pub fn total(&self, losses: &[Tensor]) -> Result<Tensor> {
        if losses.len() != self.weights.len() {
            return Err(GraftError::Input(format!(
                "{} task losses for a weighting of {} tasks",
                losses.len(),
                self.weights.len()
            )));
        }
        let mut total: Option<Tensor> = None;
        for (i, l) in losses.iter().enumerate() {
            let t = self.term(i, l, 1)?;
            total = Some(match total {
                Some(acc) => (acc + t)?,
                None => t,
            });
        }
        total.ok_or_else(|| GraftError::Input("no task losses".into()))
    }

    /// Each task's current weight on its loss: `w_i`, or `exp(−s_i)` (for metrics).
    pub fn weights(&self) -> Result<Vec<f64>> {
        match &self.log_vars {
            None => Ok(self.weights.clone()),
            Some(s) => Ok(s.as_tensor().to_dtype(DType::F64)?.neg()?.exp()?.to_vec1::<f64>()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("task{i}")).collect()
    }

    /// Two task losses of a shared parameter `x` (3 values): `L_0 = Σ (x·a)²`, `L_1 = Σ exp(x)`.
    fn task_losses(x: &Tensor) -> Vec<Tensor> {
        let a = Tensor::new(&[0.5f64, -1.0, 2.0], x.device()).unwrap();
        vec![x.mul(&a).unwrap().sqr().unwrap().sum_all().unwrap(), x.exp().unwrap().sum_all().unwrap()]
    }

    fn loss_at(x: &[f64], s: &[f64]) -> f64 {
        let dev = Device::Cpu;
        let w = LossWeighting::new(&names(2), Weighting::Uncertainty, &dev, DType::F64).unwrap();
        w.log_vars.as_ref().unwrap().set(&Tensor::new(s, &dev).unwrap()).unwrap();
        let x = Tensor::new(x, &dev).unwrap();
        w.total(&task_losses(&x)).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn uncertainty_gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let (x0, s0) = ([0.3f64, -0.2, 0.7], [0.4f64, -0.9]);
        let w = LossWeighting::new(&names(2), Weighting::Uncertainty, &dev, DType::F64).unwrap();
        let s = w.log_vars.clone().unwrap();
        s.set(&Tensor::new(&s0, &dev).unwrap()).unwrap();
        let x = Var::new(&x0, &dev).unwrap();
        let losses = task_losses(x.as_tensor());
        let total = w.total(&losses).unwrap();
        // The value is the formula's.
        let l: Vec<f64> = losses.iter().map(|l| l.to_scalar::<f64>().unwrap()).collect();
        let want: f64 = (0..2).map(|i| (-s0[i]).exp() * l[i] + s0[i]).sum();
        assert!((total.to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
        let grads = total.backward().unwrap();
        let gs = grads.get(s.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        let gx = grads.get(x.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        let h = 1e-6;
        for i in 0..2 {
            let (mut up, mut down) = (s0, s0);
            up[i] += h;
            down[i] -= h;
            let fd = (loss_at(&x0, &up) - loss_at(&x0, &down)) / (2.0 * h);
            assert!((gs[i] - fd).abs() < 1e-7, "ds_{i}: {} vs {fd}", gs[i]);
            // And the closed form 1 − exp(−s_i) L_i.
            assert!((gs[i] - (1.0 - (-s0[i]).exp() * l[i])).abs() < 1e-12);
        }
        for j in 0..3 {
            let (mut up, mut down) = (x0, x0);
            up[j] += h;
            down[j] -= h;
            let fd = (loss_at(&up, &s0) - loss_at(&down, &s0)) / (2.0 * h);
            assert!((gx[j] - fd).abs() < 1e-7, "dx_{j}: {} vs {fd}", gx[j]);
        }
    }

    #[test]
    fn a_summed_term_over_units_is_the_mean_term_times_units() {
        let dev = Device::Cpu;
        let w = LossWeighting::new(&names(2), Weighting::Uncertainty, &dev, DType::F64).unwrap();
        w.log_vars.as_ref().unwrap().set(&Tensor::new(&[0.0f64, 0.7], &dev).unwrap()).unwrap();
        let mean = Tensor::new(2.5f64, &dev).unwrap();
        let sum = (&mean * 4.0).unwrap();
        let by_sum = w.term(1, &sum, 4).unwrap().to_scalar::<f64>().unwrap() / 4.0;
        let by_mean = w.term(1, &mean, 1).unwrap().to_scalar::<f64>().unwrap();
        assert!((by_sum - by_mean).abs() < 1e-12);
        assert!((by_mean - ((-0.7f64).exp() * 2.5 + 0.7)).abs() < 1e-12);
        let weights = w.weights().unwrap();
        assert!((weights[0] - 1.0).abs() < 1e-15 && (weights[1] - (-0.7f64).exp()).abs() < 1e-15);
        let group = w.param_group().unwrap();
        assert_eq!((group.vars[0].0.as_str(), group.weight_decay), (LOG_VARS_NAME, Some(0.0)));
    }

    #[test]
    fn equal_and_fixed_weigh_the_losses() {
        let dev = Device::Cpu;
        let losses = [Tensor::new(2.0f64, &dev).unwrap(), Tensor::new(3.0f64, &dev).unwrap()];
        let eq = LossWeighting::new(&names(2), Weighting::Equal, &dev, DType::F64).unwrap();
        assert_eq!(eq.total(&losses).unwrap().to_scalar::<f64>().unwrap(), 5.0);
        assert!(eq.param_group().is_none());
        let fixed = LossWeighting::new(&names(2), Weighting::Fixed(vec![0.5, 2.0]), &dev, DType::F64).unwrap();
        assert_eq!(fixed.total(&losses).unwrap().to_scalar::<f64>().unwrap(), 7.0);
        assert_eq!(fixed.weights().unwrap(), [0.5, 2.0]);
    }

    #[test]
    fn bad_weights_are_refused_naming_the_task() {
        let dev = Device::Cpu;
        let err =
            |w: Vec<f64>| LossWeighting::new(&names(2), Weighting::Fixed(w), &dev, DType::F64).unwrap_err().to_string();
        assert!(err(vec![1.0, 0.0]).contains("task `task1` has loss weight 0"));
        assert!(err(vec![-1.0, 1.0]).contains("task `task0` has loss weight -1"));
        assert!(err(vec![1.0, f64::NAN]).contains("task `task1`"));
        assert!(err(vec![1.0]).contains("1 fixed loss weights for 2 tasks"));
        assert!(LossWeighting::new(&[], Weighting::Equal, &dev, DType::F64).is_err());
    }
}
