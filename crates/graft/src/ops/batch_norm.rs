//! Batch normalisation with the batch's own statistics (training mode) as one graph node:
//!
//! `y = γ[c] · x̂ + β[c]`, `x̂ = (x − μ[c]) / √(σ²[c] + ε)`, with `μ` and the biased `σ²` taken
//! over the `N`, `H` and `W` of each channel,
//!
//! and the closed-form backward (`M = N·H·W` values per channel, `inv = 1 / √(σ² + ε)`)
//!
//! `dβ = Σ g`, `dγ = Σ g · x̂`, `dx = γ · inv · (g − dβ / M − x̂ · dγ / M)`.
//!
//! Composed from broadcast ops, the same layer records a dozen nodes, keeps their outputs for
//! backward and reduces each broadcast's gradient with a strided sum; in from-scratch training
//! of EfficientNet-Lite0 those reductions were a quarter of the step. On the CPU (`f32`, `f64`)
//! the statistics and both passes are loops over each channel's contiguous rows, with the sums
//! accumulated in `f64`; other devices and dtypes use the same formulas as tensor ops.

use super::attach::attach3;
use super::channel_sum;
use super::cpu::{applies, with_slice, Float};
use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

/// The statistics a training-mode batch norm used, per channel (`[C]`, no gradient): for the
/// running averages.
#[derive(Debug, Clone)]
pub struct BatchStats {
    /// Mean over `N`, `H` and `W`.
    pub mean: Tensor,
    /// Biased variance (divided by `N·H·W`), as the normalisation uses.
    pub var: Tensor,
}

/// Normalises `x` `[N, C, H, W]` with its own per-channel statistics, then scales by `weight`
/// `[C]` and shifts by `bias` `[C]`; returns the output and the statistics used.
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<(Tensor, BatchStats)> {
    let (n, c, h, w) = x.dims4()?;
    if weight.dims() != [c] || bias.dims() != [c] {
        candle_core::bail!(
            "batch norm: weight {:?} and bias {:?} must both be [{c}] for an input of {c} channels",
            weight.dims(),
            bias.dims()
        );
    }
    if n * h * w == 0 {
        candle_core::bail!("batch norm: an input of shape {:?} has no values to take statistics of", x.dims());
    }
    let (xd, gamma, beta) = (x.detach(), weight.detach(), bias.detach());
    let (mean, var) = statistics(&xd)?;
    let inv = (var.to_dtype(DType::F64)? + eps)?.sqrt()?.recip()?;
    let value = if applies(&xd) && gamma.dtype() == xd.dtype() {
        cpu_normalise(&xd, &mean, &inv, &gamma, &beta)?
    } else {
        let col = |t: &Tensor| t.to_dtype(xd.dtype())?.reshape((1, c, 1, 1));
        let scale = (&gamma * inv.to_dtype(gamma.dtype())?)?;
        xd.broadcast_sub(&col(&mean)?)?.broadcast_mul(&col(&scale)?)?.broadcast_add(&col(&beta)?)?
    };
    let stats = BatchStats { mean: mean.clone(), var };
    let (want_x, want_w, want_b) = (x.track_op(), weight.track_op(), bias.track_op());
    if !(want_x || want_w || want_b) {
        return Ok((value, stats));
    }
    let y = attach3(
        "batch-norm",
        x,
        weight,
        bias,
        value,
        Box::new(move |x, gamma, _, _, g| {
            let g = g.to_dtype(x.dtype())?;
            let (dx, dw, db) = backward(x, &g, &mean, &inv, gamma)?;
            Ok((want_x.then_some(dx), want_w.then_some(dw), want_b.then_some(db)))
        }),
    )?;
    Ok((y, stats))
}

/// Per-channel mean and biased variance of `x` `[N, C, H, W]`, in `x`'s dtype.
fn statistics(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    let dev = x.device();
    let per_channel = |f: &(dyn Fn(usize) -> (f64, f64) + Sync)| {
        let (mean, var): (Vec<f64>, Vec<f64>) = (0..c).into_par_iter().map(f).unzip();
        Ok::<_, candle_core::Error>((Tensor::new(mean, dev)?, Tensor::new(var, dev)?))
    };
    let (plane, m) = (h * w, (n * h * w) as f64);
    let (mean, var) = match x.dtype() {
        DType::F32 if applies(x) => with_slice::<f32, _>(x, |v| per_channel(&|ch| moments(v, n, c, plane, ch, m)))??,
        DType::F64 if applies(x) => with_slice::<f64, _>(x, |v| per_channel(&|ch| moments(v, n, c, plane, ch, m)))??,
        _ => return statistics_composed(x),
    };
    Ok((mean.to_dtype(x.dtype())?, var.to_dtype(x.dtype())?))
}

/// [`statistics`] as tensor ops, reduced one dimension at a time: one pass over all of a
/// channel's values in f32 rounds far more (tests/efficientnet_parity.rs).
fn statistics_composed(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    let m = (n * h * w) as f64;
    let staged = |t: &Tensor| (t.sum_keepdim(3)?.sum_keepdim(2)?.sum_keepdim(0)? / m)?.flatten_all();
    let mean = staged(x)?;
    let var = staged(&x.broadcast_sub(&mean.reshape((1, c, 1, 1))?)?.sqr()?)?;
    Ok((mean, var))
}

/// Mean and biased variance (two passes, `f64` sums) of channel `ch` of `n` planes.
fn moments<T: Float>(x: &[T], n: usize, c: usize, plane: usize, ch: usize, m: f64) -> (f64, f64) {
    let rows = || (0..n).map(move |i| &x[(i * c + ch) * plane..(i * c + ch + 1) * plane]);
    let mean = rows().flat_map(|r| r.iter()).map(|v| v.to_f64()).sum::<f64>() / m;
    let var = rows().flat_map(|r| r.iter()).map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / m;
    (mean, var)
}

/// `(x − μ) · γ · inv + β` per plane, on the CPU.
fn cpu_normalise(x: &Tensor, mean: &Tensor, inv: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let f64s = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
    let (mean, inv, gamma, beta) = (f64s(mean)?, f64s(inv)?, f64s(gamma)?, f64s(beta)?);
    fn run<T: Float>(x: &[T], c: usize, plane: usize, coef: &[(f64, f64, f64)]) -> Vec<T> {
        let mut y = vec![T::default(); x.len()];
        y.par_chunks_mut(plane).zip(x.par_chunks(plane)).enumerate().for_each(|(p, (out, input))| {
            let (mu, scale, shift) = coef[p % c];
            let (mu, scale, shift) = (T::from_f64(mu), T::from_f64(scale), T::from_f64(shift));
            for (o, v) in out.iter_mut().zip(input) {
                *o = (*v - mu) * scale + shift;
            }
        });
        y
    }
    let coef: Vec<(f64, f64, f64)> = (0..c).map(|i| (mean[i], gamma[i] * inv[i], beta[i])).collect();
    let cpu = &candle_core::Device::Cpu;
    match x.dtype() {
        DType::F32 => Tensor::from_vec(with_slice::<f32, _>(x, |v| run(v, c, h * w, &coef))?, x.shape(), cpu),
        _ => Tensor::from_vec(with_slice::<f64, _>(x, |v| run(v, c, h * w, &coef))?, x.shape(), cpu),
    }
}

/// What the forward pass normalised with: the batch mean, `1 / √(σ² + ε)` and the scale `γ`.
struct Normalised<'a> {
    mean: &'a Tensor,
    inv: &'a Tensor,
    gamma: &'a Tensor,
}

/// The gradients of `x`, `γ` and `β` for the output gradient `g`.
fn backward(x: &Tensor, g: &Tensor, mean: &Tensor, inv: &Tensor, gamma: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let saved = Normalised { mean, inv, gamma };
    if applies(x) && g.dtype() == x.dtype() && gamma.dtype() == x.dtype() {
        return cpu_backward(x, g, &saved);
    }
    backward_composed(x, g, &saved)
}

/// [`backward`] as tensor ops.
fn backward_composed(x: &Tensor, g: &Tensor, saved: &Normalised) -> Result<(Tensor, Tensor, Tensor)> {
    let Normalised { mean, inv, gamma } = *saved;
    let (n, c, h, w) = x.dims4()?;
    let m = (n * h * w) as f64;
    let col = |t: &Tensor| t.to_dtype(x.dtype())?.reshape((1, c, 1, 1));
    let xhat = x.broadcast_sub(&col(mean)?)?.broadcast_mul(&col(inv)?)?;
    let db = channel_sum(g)?;
    let dw = channel_sum(&(g * &xhat)?)?;
    let scale = (gamma.to_dtype(DType::F64)? * inv)?;
    let centred = g.broadcast_sub(&col(&(&db / m)?)?)?.broadcast_sub(&xhat.broadcast_mul(&col(&(&dw / m)?)?)?)?;
    let dx = centred.broadcast_mul(&col(&scale)?)?;
    Ok((dx, dw.to_dtype(gamma.dtype())?, db.to_dtype(gamma.dtype())?))
}

/// [`backward`] on the CPU: per-channel sums over contiguous rows, then `dx` plane by plane.
fn cpu_backward(x: &Tensor, g: &Tensor, saved: &Normalised) -> Result<(Tensor, Tensor, Tensor)> {
    let Normalised { mean, inv, gamma } = *saved;
    let (n, c, h, w) = x.dims4()?;
    let plane = h * w;
    let m = (n * plane) as f64;
    let f64s = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
    let (mean, inv, gamma_v) = (f64s(mean)?, f64s(inv)?, f64s(gamma)?);
    fn run<T: Float>(
        x: &[T],
        g: &[T],
        (n, c, plane, m): (usize, usize, usize, f64),
        mean: &[f64],
        inv: &[f64],
        gamma: &[f64],
    ) -> (Vec<T>, Vec<f64>, Vec<f64>) {
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut sg, mut sgx) = (0f64, 0f64);
                for i in 0..n {
                    let at = (i * c + ch) * plane..(i * c + ch + 1) * plane;
                    for (v, gv) in x[at.clone()].iter().zip(&g[at]) {
                        let gv = gv.to_f64();
                        sg += gv;
                        sgx += gv * (v.to_f64() - mean[ch]) * inv[ch];
                    }
                }
                (sg, sgx)
            })
            .collect();
        let mut dx = vec![T::default(); x.len()];
        dx.par_chunks_mut(plane).enumerate().for_each(|(p, out)| {
            let ch = p % c;
            let (sg, sgx) = sums[ch];
            let (mu, iv, k) = (T::from_f64(mean[ch]), T::from_f64(inv[ch]), T::from_f64(gamma[ch] * inv[ch]));
            let (gm, gxm) = (T::from_f64(sg / m), T::from_f64(sgx / m));
            let at = p * plane..(p + 1) * plane;
            for ((o, v), gv) in out.iter_mut().zip(&x[at.clone()]).zip(&g[at]) {
                *o = (*gv - gm - (*v - mu) * iv * gxm) * k;
            }
        });
        let (sg, sgx) = sums.into_iter().unzip();
        (dx, sgx, sg)
    }
    let cpu = &candle_core::Device::Cpu;
    let dims = (n, c, plane, m);
    let (dx, dw, db) = match x.dtype() {
        DType::F32 => {
            let (dx, dw, db) =
                with_slice::<f32, _>(x, |x| with_slice::<f32, _>(g, |g| run(x, g, dims, &mean, &inv, &gamma_v)))??;
            (Tensor::from_vec(dx, x.shape(), cpu)?, dw, db)
        }
        _ => {
            let (dx, dw, db) =
                with_slice::<f64, _>(x, |x| with_slice::<f64, _>(g, |g| run(x, g, dims, &mean, &inv, &gamma_v)))??;
            (Tensor::from_vec(dx, x.shape(), cpu)?, dw, db)
        }
    };
    let stat = |v: Vec<f64>| Tensor::new(v, cpu)?.to_dtype(gamma.dtype());
    Ok((dx, stat(dw)?, stat(db)?))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{max_diff, values};
    use super::*;

    #[test]
    fn cpu_kernels_match_the_tensor_form() {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            for (n, c, h, w) in [(3, 4, 5, 3), (1, 2, 1, 1), (2, 5, 7, 1)] {
                let x = values(&[n, c, h, w], 1.0, dtype);
                let gamma = values(&[c], 2.0, dtype);
                let g = values(&[n, c, h, w], 3.0, dtype);
                let (mean, var) = statistics(&x).unwrap();
                let (mean_c, var_c) = statistics_composed(&x).unwrap();
                assert!(max_diff(&mean, &mean_c) < tol && max_diff(&var, &var_c) < tol, "{dtype:?} {n}x{c}x{h}x{w}");
                let inv = (var.to_dtype(DType::F64).unwrap() + 1e-3).unwrap().sqrt().unwrap().recip().unwrap();
                let saved = Normalised { mean: &mean, inv: &inv, gamma: &gamma };
                let fast = cpu_backward(&x, &g, &saved).unwrap();
                let composed = backward_composed(&x, &g, &saved).unwrap();
                for (a, b) in [(&fast.0, &composed.0), (&fast.1, &composed.1), (&fast.2, &composed.2)] {
                    assert!(max_diff(a, b) < tol * 10.0, "{dtype:?} {n}x{c}x{h}x{w}: {}", max_diff(a, b));
                }
            }
        }
    }
}
