//! PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning"): per-task gradients of
//! the trainable parameters are combined so that no task's update works against another's.
//!
//! For each task `i`, `g_i' = g_i`; then for every other task `j`, in an order drawn at random,
//! if `g_i'·g_j < 0` the conflicting component is projected away:
//! `g_i' ← g_i' − (g_i'·g_j / ‖g_j‖²) g_j` (with the *original* `g_j`). The update is `Σ_i g_i'`.
//! When no pair conflicts this is the plain sum `Σ_i g_i`.
//!
//! Every `g_i'` is a linear combination of the original gradients, so the projections run on
//! the tasks' Gram matrix `G_jk = g_j·g_k` (dot products in f64 over all parameters) and the
//! result is `Σ_k c_k g_k`: `n²` dot products and one weighted sum per parameter, never a
//! projected copy of a parameter-sized gradient per task. The random orders are a pure function
//! of `(seed, step)`, so a resumed run combines exactly as the uninterrupted one did.
//!
//! # In a training step
//! PCGrad needs each task's gradient of a step apart, where
//! [`accumulate_and_step`](crate::train::step::accumulate_and_step) sums every micro-batch
//! into one gradient. [`pcgrad_step`] is the step that keeps them apart: each task's
//! micro-batches go through [`accumulate`] (backward per micro-batch, checkpointed blocks'
//! gradients merged, divided by the task's units), [`pcgrad`] combines the tasks' lists, and
//! [`clip_and_apply`] does the usual finite check, clipping and update. A recipe that trains
//! with PCGrad calls it in place of `accumulate_and_step`; the `Trainer` does not yet offer
//! the choice (docs/multitask.md).

use crate::data::permute;
use crate::train::optim::Optimizer;
use crate::train::step::{accumulate, clip_and_apply, LossSum, StepStats};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Mixed into the seed so PCGrad's orders differ from other streams of the same seed.
const PCGRAD_SALT: u64 = 0x7063_6772_6164_5f6f;

/// The coefficients `c` with PCGrad's update `= Σ_k c_k g_k`, from the Gram matrix
/// `gram[j][k] = g_j·g_k` of the tasks' gradients, with each task's order of the others drawn
/// from `(seed, step)`.
///
/// Example: `g_0 = (1, 0)`, `g_1 = (−1, 1)` conflict (`g_0·g_1 = −1`):
/// `g_0' = g_0 + ½ g_1 = (½, ½)`, `g_1' = g_1 + g_0 = (0, 1)`, so `c = (2, 1.5)` and the update
/// is `(½, 3/2)`.
pub fn pcgrad_coefficients(gram: &[Vec<f64>], seed: u64, step: u64) -> Result<Vec<f64>> {
    let n = gram.len();
    if n == 0 {
        return Err(GraftError::Input("PCGrad needs the gradient of at least one task".into()));
    }
    if gram.iter().any(|row| row.len() != n) {
        return Err(GraftError::Input(format!("PCGrad: the Gram matrix of {n} tasks is not {n} × {n}")));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ PCGRAD_SALT);
    rng.set_stream(step);
    let mut total = vec![0.0; n];
    for i in 0..n {
        let mut others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
        permute(&mut others, &mut rng);
        // g_i' = Σ_k a_k g_k.
        let mut a = vec![0.0; n];
        a[i] = 1.0;
        for j in others {
            let dot: f64 = (0..n).map(|k| a[k] * gram[k][j]).sum();
            if dot < 0.0 && gram[j][j] > 0.0 {
                a[j] -= dot / gram[j][j];
            }
        }
        for (t, ak) in total.iter_mut().zip(&a) {
            *t += ak;
        }
    }
    Ok(total)
}

/// PCGrad over per-task gradients given as flattened vectors (one per task, equal lengths).
pub fn pcgrad_flat(task_grads: &[Vec<f64>], seed: u64, step: u64) -> Result<Vec<f64>> {
    let len = task_grads.first().map_or(0, Vec::len);
    if let Some(bad) = task_grads.iter().position(|g| g.len() != len) {
        return Err(GraftError::Input(format!(
            "PCGrad: task {bad}'s gradient has {} values, task 0's {len}",
            task_grads[bad].len()
        )));
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let gram: Vec<Vec<f64>> = task_grads.iter().map(|a| task_grads.iter().map(|b| dot(a, b)).collect()).collect();
    let c = pcgrad_coefficients(&gram, seed, step)?;
    Ok((0..len).map(|p| task_grads.iter().zip(&c).map(|(g, ck)| ck * g[p]).sum()).collect())
}

/// PCGrad over per-task gradients given as one tensor per trainable `Var` (the same list of
/// shapes for every task; a task that does not reach a `Var` gives zeros there). Dot products
/// are taken in f64 over all tensors (each product summed in f32, or f64 for f64 gradients);
/// the result keeps the gradients' dtype.
pub fn pcgrad(task_grads: &[Vec<Tensor>], seed: u64, step: u64) -> Result<Vec<Tensor>> {
    let first =
        task_grads.first().ok_or_else(|| GraftError::Input("PCGrad needs the gradient of at least one task".into()))?;
    for (t, grads) in task_grads.iter().enumerate() {
        let same = grads.len() == first.len() && grads.iter().zip(first).all(|(a, b)| a.dims() == b.dims());
        if !same {
            return Err(GraftError::Input(format!(
                "PCGrad: task {t}'s gradients do not have task 0's shapes (one tensor per trainable variable, in the same order)"
            )));
        }
    }
    let n = task_grads.len();
    let mut gram = vec![vec![0.0; n]; n];
    for j in 0..n {
        for k in j..n {
            let d = dot(&task_grads[j], &task_grads[k])?;
            gram[j][k] = d;
            gram[k][j] = d;
        }
    }
    let c = pcgrad_coefficients(&gram, seed, step)?;
    let mut out = Vec::with_capacity(first.len());
    for p in 0..first.len() {
        let mut acc = (&task_grads[0][p] * c[0])?;
        for (grads, ck) in task_grads.iter().zip(&c).skip(1) {
            acc = (acc + (&grads[p] * *ck)?)?;
        }
        out.push(acc);
    }
    Ok(out)
}

/// One optimizer step with PCGrad over as many tasks as `micro_batches` has entries, task `t`
/// running `micro_batches[t]` micro-batches: `loss_of(task, micro)` gives a micro-batch's loss; each task's gradient is normalised by its
/// own units, the tasks' gradients combined by [`pcgrad`] with the orders of `(seed, step)`,
/// then checked, clipped to `max_grad_norm` (0 = off) and applied at `lr`.
///
/// The returned loss is the mean over all targets of the step; a non-finite loss or gradient
/// stops with [`GraftError::Diverged`], the weights untouched.
pub fn pcgrad_step(
    step: u64,
    optimizer: &mut Optimizer,
    micro_batches: &[usize],
    seed: u64,
    mut loss_of: impl FnMut(usize, usize) -> Result<LossSum>,
    max_grad_norm: f64,
    lr: f64,
) -> Result<StepStats> {
    let params: Vec<_> = optimizer.params().iter().map(|(_, v)| v.clone()).collect();
    let (mut task_grads, mut total, mut targets) = (Vec::with_capacity(micro_batches.len()), 0.0, 0);
    let mut reached = vec![false; params.len()];
    for (task, &n) in micro_batches.iter().enumerate() {
        let g = accumulate(step, &params, n, |micro| loss_of(task, micro))?;
        total += g.loss * g.targets as f64;
        targets += g.targets;
        reached.iter_mut().zip(&g.reached).for_each(|(any, r)| *any |= r);
        task_grads.push(g.grads);
    }
    let combined = pcgrad(&task_grads, seed, step)?;
    let grad_norm = clip_and_apply(step, optimizer, combined, &reached, max_grad_norm, lr)?;
    Ok(StepStats { loss: total / targets as f64, grad_norm, targets })
}

/// `Σ_p a_p·b_p` over two gradient lists, accumulated in f64.
fn dot(a: &[Tensor], b: &[Tensor]) -> Result<f64> {
    let mut sum = 0.0;
    for (x, y) in a.iter().zip(b) {
        let work = if x.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
        let prod = x.to_dtype(work)?.mul(&y.to_dtype(work)?)?.sum_all()?;
        sum += prod.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn two_conflicting_tasks_by_hand() {
        // g0·g1 = −1: g0' = g0 − (−1/2) g1 = (½, ½); g1' = g1 − (−1/1) g0 = (0, 1).
        let out = pcgrad_flat(&[vec![1.0, 0.0], vec![-1.0, 1.0]], 0, 0).unwrap();
        assert!(close(&out, &[0.5, 1.5]), "{out:?}");
        // Each projected gradient no longer conflicts: g0'·g1 = 0, g1'·g0 = 0.
        let gram = vec![vec![1.0, -1.0], vec![-1.0, 2.0]];
        assert!(close(&pcgrad_coefficients(&gram, 9, 4).unwrap(), &[2.0, 1.5]));
    }

    #[test]
    fn non_conflicting_tasks_give_the_plain_sum() {
        let g = [vec![1.0, 0.0, 2.0], vec![1.0, 1.0, 0.0], vec![0.0, 3.0, 1.0]];
        for step in 0..5 {
            let out = pcgrad_flat(&g, 1, step).unwrap();
            assert!(close(&out, &[2.0, 4.0, 3.0]), "{out:?}");
        }
        // Orthogonal gradients (dot 0) are not projected either.
        assert!(close(&pcgrad_flat(&[vec![1.0, 0.0], vec![0.0, -2.0]], 0, 0).unwrap(), &[1.0, -2.0]));
    }

    /// Sequential PCGrad with given orders of the others, written directly on vectors.
    fn naive(g: &[Vec<f64>], orders: &[Vec<usize>]) -> Vec<f64> {
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let mut sum = vec![0.0; g[0].len()];
        for (i, order) in orders.iter().enumerate() {
            let mut gi = g[i].clone();
            for &j in order {
                let d = dot(&gi, &g[j]);
                if d < 0.0 {
                    let s = d / dot(&g[j], &g[j]);
                    gi.iter_mut().zip(&g[j]).for_each(|(x, y)| *x -= s * y);
                }
            }
            sum.iter_mut().zip(&gi).for_each(|(s, x)| *s += x);
        }
        sum
    }

    #[test]
    fn three_tasks_match_sequential_projection_in_some_order() {
        let g = vec![vec![1.0, 0.2, -0.5], vec![-0.8, 1.0, 0.3], vec![0.1, -1.2, 0.9]];
        let pairs = |i: usize| -> Vec<Vec<usize>> {
            let o: Vec<usize> = (0..3).filter(|&j| j != i).collect();
            vec![o.clone(), o.into_iter().rev().collect()]
        };
        let mut candidates = Vec::new();
        for a in pairs(0) {
            for b in pairs(1) {
                for c in pairs(2) {
                    candidates.push(naive(&g, &[a.clone(), b.clone(), c]));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for step in 0..16 {
            let out = pcgrad_flat(&g, 2, step).unwrap();
            let k = candidates.iter().position(|c| c.iter().zip(&out).all(|(x, y)| (x - y).abs() < 1e-12));
            seen.insert(k.expect("PCGrad result is a sequential projection in some order"));
            // The same (seed, step) combines the same way.
            assert_eq!(out, pcgrad_flat(&g, 2, step).unwrap());
        }
        assert!(seen.len() > 1, "the orders are drawn, not fixed");
    }

    #[test]
    fn tensor_lists_agree_with_flat_vectors() {
        let dev = Device::Cpu;
        let flat = [vec![1.0, 0.0, 0.5, -2.0, 1.0], vec![-1.0, 1.0, 0.0, 1.0, 0.5]];
        let split = |v: &[f64]| {
            vec![Tensor::new(&v[..2], &dev).unwrap(), Tensor::new(&v[2..], &dev).unwrap().reshape((3, 1)).unwrap()]
        };
        let out = pcgrad(&[split(&flat[0]), split(&flat[1])], 3, 7).unwrap();
        let got: Vec<f64> = out.iter().flat_map(|t| t.flatten_all().unwrap().to_vec1::<f64>().unwrap()).collect();
        assert!(close(&got, &pcgrad_flat(&flat, 3, 7).unwrap()), "{got:?}");
        let f32s: Vec<Vec<Tensor>> = [&flat[0], &flat[1]]
            .iter()
            .map(|v| split(v).into_iter().map(|t| t.to_dtype(DType::F32).unwrap()).collect())
            .collect();
        assert_eq!(pcgrad(&f32s, 3, 7).unwrap()[0].dtype(), DType::F32);
    }

    #[test]
    fn a_pcgrad_step_updates_by_the_combined_gradient() {
        use crate::train::optim::OptimizerKind;
        let dev = Device::Cpu;
        let x = Var::new(&[0.25f64, -0.5], &dev).unwrap();
        let sgd = OptimizerKind::Sgd { momentum: 0.0, weight_decay: 0.0 };
        let mut opt = Optimizer::new(sgd, vec![("x".into(), x.clone())]).unwrap();
        // Task 0: two micro-batches of one unit with gradient (1, 0) each, so (1, 0) per unit;
        // task 1: two of two units with gradient (−2, 2) each, so (−1, 1) per unit: the
        // hand-computed case.
        let dirs = [[1.0f64, 0.0], [-2.0, 2.0]];
        let stats = pcgrad_step(
            1,
            &mut opt,
            &[2, 2],
            0,
            |task, _micro| {
                let d = Tensor::new(&dirs[task], &dev)?;
                let units = if task == 0 { 1 } else { 2 };
                Ok(LossSum { sum: x.as_tensor().mul(&d)?.sum_all()?, count: units, sink: None })
            },
            0.0,
            1.0,
        )
        .unwrap();
        let got = x.as_tensor().to_vec1::<f64>().unwrap();
        assert!(close(&got, &[0.25 - 0.5, -0.5 - 1.5]), "{got:?}");
        assert_eq!(stats.targets, 6);
        assert!((stats.grad_norm - (0.25f64 + 2.25).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn mismatched_gradients_are_refused() {
        assert!(pcgrad_flat(&[vec![1.0], vec![1.0, 2.0]], 0, 0).unwrap_err().to_string().contains("task 1"));
        assert!(pcgrad(&[], 0, 0).is_err());
        let dev = Device::Cpu;
        let a = vec![Tensor::zeros(3, DType::F32, &dev).unwrap()];
        let b = vec![Tensor::zeros(4, DType::F32, &dev).unwrap()];
        assert!(pcgrad(&[a, b], 0, 0).unwrap_err().to_string().contains("task 1"));
    }
}
