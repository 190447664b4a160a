//! The gated MLP's `silu(gate) · up` as one graph node.
//!
//! Composed from candle's `silu` and `mul`, training keeps `silu(gate)` beside the product, and
//! the backward of `silu` builds half a dozen temporaries the size of the MLP's activations
//! (negation, exponential, reciprocal, products, sums): in a checkpointed LoRA step of
//! SmolLM2-135M those were the largest transient buffers of the step. Here the node keeps only its
//! inputs, and the backward computes both input gradients in one pass,
//! `d gate = dy · up · σ(g)(1 + g(1 − σ(g)))` and `d up = dy · silu(g)`. On the CPU (`f32`, `f64`)
//! both passes are loops; elsewhere they are tensor ops.

use super::attach::attach2;
use super::cpu::{applies, with_slice, Real, CHUNK};
use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

/// `silu(gate) · up` (elementwise; both the same shape and dtype), with a fused backward.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.shape() != up.shape() || gate.dtype() != up.dtype() {
        candle_core::bail!(
            "silu_mul: gate {:?} {:?} and up {:?} {:?} differ",
            gate.dims(),
            gate.dtype(),
            up.dims(),
            up.dtype()
        );
    }
    let (g, u) = (gate.detach(), up.detach());
    let value = if fused(&g, &u) { cpu_forward(&g, &u)? } else { (g.silu()? * u)? };
    if !gate.track_op() && !up.track_op() {
        return Ok(value);
    }
    attach2(
        "silu-mul",
        gate,
        up,
        value,
        Box::new(|g, u, _, dy| {
            let dy = dy.to_dtype(g.dtype())?;
            let (dg, du) =
                if fused(g, u) && applies(&dy) { cpu_backward(g, u, &dy)? } else { tensor_backward(g, u, &dy)? };
            Ok((Some(dg), Some(du)))
        }),
    )
}

fn fused(g: &Tensor, u: &Tensor) -> bool {
    applies(g) && applies(u)
}

/// `σ(g)` and `silu(g) = g / (1 + e^{−g})`, in `T` and in candle's form, so the forward is its
/// `silu(g) · up` bit for bit (teacher and student of a distillation run stay identical).
fn sigmoid_silu<T: Real>(g: T) -> (T, T) {
    let denom = T::one() + (-g).exp();
    (T::one() / denom, g / denom)
}

fn cpu_forward(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    fn run<T: Real>(g: &[T], u: &[T]) -> Vec<T> {
        let mut out = vec![T::default(); g.len()];
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(k, chunk)| {
            let at = k * CHUNK..k * CHUNK + chunk.len();
            for ((o, gv), uv) in chunk.iter_mut().zip(&g[at.clone()]).zip(&u[at]) {
                *o = sigmoid_silu(*gv).1 * *uv;
            }
        });
        out
    }
    let v = match g.dtype() {
        DType::F32 => Tensor::from_vec(
            with_slice::<f32, _>(g, |g| with_slice::<f32, _>(u, |u| run(g, u)))??,
            g.shape(),
            g.device(),
        )?,
        _ => Tensor::from_vec(
            with_slice::<f64, _>(g, |g| with_slice::<f64, _>(u, |u| run(g, u)))??,
            g.shape(),
            g.device(),
        )?,
    };
    Ok(v)
}

fn cpu_backward(g: &Tensor, u: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    fn run<T: Real>(g: &[T], u: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
        let (mut dg, mut du) = (vec![T::default(); g.len()], vec![T::default(); g.len()]);
        let one = T::one();
        dg.par_chunks_mut(CHUNK).zip(du.par_chunks_mut(CHUNK)).enumerate().for_each(|(k, (dgc, duc))| {
            let at = k * CHUNK..k * CHUNK + dgc.len();
            for (i, (a, b)) in at.zip(dgc.iter_mut().zip(duc.iter_mut())) {
                let (s, silu) = sigmoid_silu(g[i]);
                *a = dy[i] * u[i] * s * (one + g[i] * (one - s));
                *b = dy[i] * silu;
            }
        });
        (dg, du)
    }
    fn typed<T: Real>(g: &Tensor, u: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        let (dg, du) =
            with_slice::<T, _>(g, |g| with_slice::<T, _>(u, |u| with_slice::<T, _>(dy, |dy| run(g, u, dy))))???;
        Ok((Tensor::from_vec(dg, g.shape(), g.device())?, Tensor::from_vec(du, g.shape(), g.device())?))
    }
    match g.dtype() {
        DType::F32 => typed::<f32>(g, u, dy),
        _ => typed::<f64>(g, u, dy),
    }
}

/// The same gradients from tensor ops (other devices and dtypes).
fn tensor_backward(g: &Tensor, u: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    let s = candle_nn::ops::sigmoid(g)?;
    let silu = (g * &s)?;
    let dsilu = (&s * (g * (1.0 - &s)?)?.affine(1.0, 1.0)?)?;
    Ok(((dy * u)?.mul(&dsilu)?, (dy * silu)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Values spread over where silu bends, and both signs.
    fn inputs(dtype: DType) -> (Tensor, Tensor, Tensor) {
        let dev = Device::Cpu;
        let n = 3 * CHUNK / 2 + 7; // more than one parallel task, and a ragged tail
        let at = |k: usize, f: f64| ((k as f64 * f).sin() * 6.0).clamp(-8.0, 8.0);
        let t = |f: f64| Tensor::from_vec((0..n).map(|k| at(k, f)).collect::<Vec<_>>(), n, &dev)?.to_dtype(dtype);
        (t(0.37).unwrap(), t(0.91).unwrap(), t(0.13).unwrap())
    }

    #[test]
    fn forward_and_backward_match_the_tensor_form() {
        for dtype in [DType::F32, DType::F64] {
            let (g, u, dy) = inputs(dtype);
            let want = (g.silu().unwrap() * &u).unwrap();
            let got = cpu_forward(&g, &u).unwrap();
            let diff = |a: &Tensor, b: &Tensor| -> f64 {
                (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_keepdim(0)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()[0]
            };
            assert_eq!(diff(&got, &want), 0.0, "{dtype:?}: candle's silu and product, bit for bit");
            let tol = if dtype == DType::F32 { 1e-4 } else { 1e-12 }; // values reach about 40
            let (dg, du) = cpu_backward(&g, &u, &dy).unwrap();
            let (tg, tu) = tensor_backward(&g, &u, &dy).unwrap();
            assert!(diff(&dg, &tg) < tol && diff(&du, &tu) < tol, "{dtype:?}");
        }
    }

    /// Central finite differences of `Σ w · silu_mul(g, u)` in f64 against both gradients, and
    /// the gradients equal those of candle's composed `silu(g) · u`.
    #[test]
    fn gradients_match_finite_differences_and_candles_autograd() {
        let (g0, u0, w) = inputs(DType::F64);
        let (g, u) = (Var::from_tensor(&g0).unwrap(), Var::from_tensor(&u0).unwrap());
        let loss = |g: &Tensor, u: &Tensor| -> f64 {
            (silu_mul(g, u).unwrap() * &w).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let grads =
            (silu_mul(g.as_tensor(), u.as_tensor()).unwrap() * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (dg, du) =
            (grads.get(&g).unwrap().to_vec1::<f64>().unwrap(), grads.get(&u).unwrap().to_vec1::<f64>().unwrap());
        let composed = (g.as_tensor().silu().unwrap() * u.as_tensor()).unwrap().mul(&w).unwrap().sum_all().unwrap();
        let cg = composed.backward().unwrap();
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-12 * (1.0 + y.abs()));
        assert!(close(&dg, &cg.get(&g).unwrap().to_vec1::<f64>().unwrap()));
        assert!(close(&du, &cg.get(&u).unwrap().to_vec1::<f64>().unwrap()));
        let h = 1e-6;
        let (gv, uv) = (g0.to_vec1::<f64>().unwrap(), u0.to_vec1::<f64>().unwrap());
        for &i in &[0usize, 5, 77, 1000, CHUNK + 3, gv.len() - 1] {
            for (which, analytic) in [(0, dg[i]), (1, du[i])] {
                let bump = |d: f64| {
                    let (mut gp, mut up) = (gv.clone(), uv.clone());
                    if which == 0 {
                        gp[i] += d
                    } else {
                        up[i] += d
                    }
                    let t = |v: Vec<f64>| Tensor::from_vec(v, gv.len(), &Device::Cpu).unwrap();
                    loss(&t(gp), &t(up))
                };
                let fd = (bump(h) - bump(-h)) / (2.0 * h);
                assert!(
                    (fd - analytic).abs() <= 1e-6 * (1.0 + analytic.abs()),
                    "input {which} [{i}]: fd {fd} vs {analytic}"
                );
            }
        }
    }

    #[test]
    fn mismatched_inputs_are_refused() {
        let (g, u, _) = inputs(DType::F32);
        assert!(silu_mul(&g, &u.narrow(0, 0, 10).unwrap()).is_err());
        assert!(silu_mul(&g, &u.to_dtype(DType::F64).unwrap()).is_err());
    }
}
