//! LayerNorm over the last axis as one graph node:
//!
//! `y = w ⊙ x̂ + b`, `x̂ = (x − μ) · inv`, `inv = 1 / √(σ² + ε)`, with `μ` and the biased `σ²`
//! taken over each row of `h` values,
//!
//! and the closed-form backward (`gw = g ⊙ w`)
//!
//! `dx = inv · (gw − mean(gw) − x̂ · mean(gw ⊙ x̂))`, `dw = Σ_rows g ⊙ x̂`, `db = Σ_rows g`.
//!
//! Composed from broadcast ops (as BERT's training path was), one LayerNorm records ten nodes,
//! keeps their outputs until backward, and reduces the weight's and bias's gradients with strided
//! sums over every row; in MiniLM fine-tuning, element-wise passes and reductions took a third of
//! the step. On the CPU (`f32`, `f64`) each row's statistics and both passes are loops over the
//! row, the sums accumulated in `f64`; other devices and dtypes use the same formulas as tensor
//! ops.

use super::attach::attach3;
use super::cpu::{applies, with_slice, Float};
use candle_core::{DType, Result, Tensor, D};
use rayon::prelude::*;

/// Rows per parallel task of the weight and bias gradients: each task sums its rows into its own
/// `2h` accumulators.
const ROWS_PER_TASK: usize = 64;

/// LayerNorm of `x` `[.., h]` over its last axis with `weight` and `bias` `[h]`; each of the three
/// gets a gradient when it is tracked.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let h = x.dim(D::Minus1)?;
    if weight.dims() != [h] || bias.dims() != [h] {
        candle_core::bail!(
            "layer norm: weight {:?} and bias {:?} must both be [{h}] for rows of {h} values",
            weight.dims(),
            bias.dims()
        );
    }
    let (xd, wd, bd) = (x.detach(), weight.detach(), bias.detach());
    let cpu = applies(&xd) && wd.dtype() == xd.dtype() && bd.dtype() == xd.dtype();
    let value = if cpu { cpu_forward(&xd, &wd, &bd, eps)? } else { composed(&xd, &wd, &bd, eps)? };
    let (want_x, want_w, want_b) = (x.track_op(), weight.track_op(), bias.track_op());
    if !(want_x || want_w || want_b) {
        return Ok(value);
    }
    attach3(
        "layer-norm",
        x,
        weight,
        bias,
        value,
        Box::new(move |x, w, _, _, g| {
            let g = g.to_dtype(x.dtype())?;
            let (dx, dw, db) = if applies(x) && w.dtype() == x.dtype() {
                cpu_backward(x, w, &g, eps)?
            } else {
                backward_composed(x, w, &g, eps)?
            };
            Ok((want_x.then_some(dx), want_w.then_some(dw), want_b.then_some(db)))
        }),
    )
}

/// `x̂` and `inv` `[.., 1]` as tensor ops.
fn normalised(x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let inv = (centred.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    Ok((centred.broadcast_mul(&inv)?, inv))
}

/// The forward as tensor ops.
fn composed(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    normalised(x, eps)?.0.broadcast_mul(w)?.broadcast_add(b)
}

/// The gradients of `x`, `w` and `b` for the output gradient `g`, as tensor ops.
fn backward_composed(x: &Tensor, w: &Tensor, g: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let h = x.dim(D::Minus1)?;
    let rows = x.elem_count() / h;
    let (xhat, inv) = normalised(x, eps)?;
    let gw = g.broadcast_mul(w)?;
    let centred = gw.broadcast_sub(&gw.mean_keepdim(D::Minus1)?)?;
    let dx =
        centred.broadcast_sub(&xhat.broadcast_mul(&(&gw * &xhat)?.mean_keepdim(D::Minus1)?)?)?.broadcast_mul(&inv)?;
    let dw = (g * &xhat)?.reshape((rows, h))?.sum(0)?;
    let db = g.reshape((rows, h))?.sum(0)?;
    Ok((dx, dw, db))
}

/// Mean and `1 / √(σ² + ε)` of one row (two passes, `f64` sums).
fn row_stats<T: Float>(row: &[T], eps: f64) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = row.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// The forward on the CPU, rows spread over the thread pool.
fn cpu_forward(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    fn rows<T: Float>(x: &[T], w: &[T], b: &[T], eps: f64) -> Vec<T> {
        let h = w.len();
        let mut y = vec![T::default(); x.len()];
        y.par_chunks_mut(h).zip(x.par_chunks(h)).for_each(|(out, row)| {
            let (mean, inv) = row_stats(row, eps);
            let (mean, inv) = (T::from_f64(mean), T::from_f64(inv));
            for (((o, v), wv), bv) in out.iter_mut().zip(row).zip(w).zip(b) {
                *o = (*v - mean) * inv * *wv + *bv;
            }
        });
        y
    }
    fn run<T: Float>(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
        let y = with_slice::<T, _>(x, |xs| {
            with_slice::<T, _>(w, |ws| with_slice::<T, _>(b, |bs| rows(xs, ws, bs, eps)))
        })???;
        Tensor::from_vec(y, x.shape(), &candle_core::Device::Cpu)
    }
    match x.dtype() {
        DType::F32 => run::<f32>(x, w, b, eps),
        _ => run::<f64>(x, w, b, eps),
    }
}

/// The gradients of `x`, `w` and `b` for the output gradient `g` on the CPU: `dx` row by row,
/// the weight's and bias's sums per task of [`ROWS_PER_TASK`] rows, then added up (in `f64`).
fn cpu_backward(x: &Tensor, w: &Tensor, g: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    fn rows<T: Float>(x: &[T], w: &[T], g: &[T], eps: f64) -> (Vec<T>, Vec<f64>, Vec<f64>) {
        let h = w.len();
        let task = ROWS_PER_TASK * h;
        let mut dx = vec![T::default(); x.len()];
        let partial: Vec<(Vec<f64>, Vec<f64>)> = dx
            .par_chunks_mut(task)
            .zip(x.par_chunks(task))
            .zip(g.par_chunks(task))
            .map(|((dx, x), g)| {
                let (mut dw, mut db) = (vec![0f64; h], vec![0f64; h]);
                for ((out, row), grad) in dx.chunks_mut(h).zip(x.chunks(h)).zip(g.chunks(h)) {
                    let (mean, inv) = row_stats(row, eps);
                    let (mut sum_gw, mut sum_gw_xhat) = (0f64, 0f64);
                    for k in 0..h {
                        let (xhat, gv) = ((row[k].to_f64() - mean) * inv, grad[k].to_f64());
                        let gw = gv * w[k].to_f64();
                        sum_gw += gw;
                        sum_gw_xhat += gw * xhat;
                        dw[k] += gv * xhat;
                        db[k] += gv;
                    }
                    let (mean_gw, mean_gw_xhat) = (sum_gw / h as f64, sum_gw_xhat / h as f64);
                    for k in 0..h {
                        let xhat = (row[k].to_f64() - mean) * inv;
                        let gw = grad[k].to_f64() * w[k].to_f64();
                        out[k] = T::from_f64(inv * (gw - mean_gw - xhat * mean_gw_xhat));
                    }
                }
                (dw, db)
            })
            .collect();
        let (mut dw, mut db) = (vec![0f64; h], vec![0f64; h]);
        for (pw, pb) in partial {
            dw.iter_mut().zip(pw).for_each(|(a, v)| *a += v);
            db.iter_mut().zip(pb).for_each(|(a, v)| *a += v);
        }
        (dx, dw, db)
    }
    fn run<T: Float>(x: &Tensor, w: &Tensor, g: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
        let (dx, dw, db) = with_slice::<T, _>(x, |xs| {
            with_slice::<T, _>(w, |ws| with_slice::<T, _>(g, |gs| rows(xs, ws, gs, eps)))
        })???;
        let cpu = &candle_core::Device::Cpu;
        let sums = |v: Vec<f64>| Tensor::new(v, cpu)?.to_dtype(w.dtype());
        Ok((Tensor::from_vec(dx, x.shape(), cpu)?, sums(dw)?, sums(db)?))
    }
    match x.dtype() {
        DType::F32 => run::<f32>(x, w, g, eps),
        _ => run::<f64>(x, w, g, eps),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{max_diff, values};
    use super::*;

    #[test]
    fn cpu_kernels_match_the_tensor_form() {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            // More rows than one task holds, a single row, a row of one value.
            for shape in [vec![3, 50, 7], vec![1, 5], vec![4, 1]] {
                let h = *shape.last().unwrap();
                let (x, g) = (values(&shape, 1.0, dtype), values(&shape, 3.0, dtype));
                let (w, b) = (values(&[h], 2.0, dtype), values(&[h], 4.0, dtype));
                let fast = cpu_forward(&x, &w, &b, 1e-5).unwrap();
                assert!(max_diff(&fast, &composed(&x, &w, &b, 1e-5).unwrap()) < tol, "{dtype:?} {shape:?}");
                let fast = cpu_backward(&x, &w, &g, 1e-5).unwrap();
                let slow = backward_composed(&x, &w, &g, 1e-5).unwrap();
                for (a, b) in [(&fast.0, &slow.0), (&fast.1, &slow.1), (&fast.2, &slow.2)] {
                    assert!(max_diff(a, b) < tol * 10.0, "{dtype:?} {shape:?}: {}", max_diff(a, b));
                }
            }
        }
    }
}
