//! The exact GELU, `gelu(x) = x · Φ(x) = x/2 · (1 + erf(x/√2))`, as one graph node with the
//! closed-form backward `gelu'(x) = Φ(x) + x · φ(x)`, `φ(x) = exp(−x²/2) / √(2π)`.
//!
//! Composed from `erf` and element-wise ops (as BERT's training path was), the layer records five
//! nodes and its backward about ten passes over the feed-forward layer's widest activation;
//! candle's own `gelu_erf` node has a backward, but with `1/√(2π)` rounded to six digits. On the
//! CPU (`f32`, `f64`) both passes are single loops; other devices and dtypes use the same formulas
//! as tensor ops. The forward is candle's `gelu_erf` expression, so it equals the inference path.

use super::attach::attach1;
use super::cpu::{applies, with_slice, Float, CHUNK};
use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;
use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// The exact (erf) GELU of `x`, with its exact derivative in backward.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    let xd = x.detach();
    let value = if applies(&xd) { cpu_map(&xd, None)? } else { xd.gelu_erf()? };
    if !x.track_op() {
        return Ok(value);
    }
    attach1(
        "gelu-erf",
        x,
        value,
        Box::new(|x, y, g| {
            let g = g.to_dtype(x.dtype())?;
            if applies(x) {
                return Ok(Some(cpu_map(x, Some((y, &g)))?));
            }
            let cdf = (((x * FRAC_1_SQRT_2)?.erf()? + 1.0)? * 0.5)?;
            let pdf = ((x.sqr()? * -0.5)?.exp()? * (1.0 / (2.0 * PI).sqrt()))?;
            Ok(Some((g * (cdf + (x * pdf)?)?)?))
        }),
    )
}

/// `erf` in each CPU kernel dtype (candle's, so that the forward matches its `gelu_erf`).
trait Erf: Float {
    fn erf(self) -> Self;
    fn exp(self) -> Self;
}
impl Erf for f32 {
    fn erf(self) -> Self {
        candle_core::cpu::erf::erf_f32(self)
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
}
impl Erf for f64 {
    fn erf(self) -> Self {
        candle_core::cpu::erf::erf_f64(self)
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// Below this `|x|`, `Φ(x)` is taken as `1/2 + x · φ(0)` in backward rather than `gelu(x) / x`.
const SMALL: f64 = 1e-6;

/// On the CPU: `gelu(x)` (`grad` absent), or `grad · gelu'(x)` from `x`, the forward's output `y`
/// and the output gradient. The backward reads `Φ(x)` off the output as `y / x` instead of
/// evaluating `erf` again (`erf` was a tenth of a MiniLM fine-tuning step); `φ(x)` is one `exp`.
fn cpu_map(x: &Tensor, grad: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
    fn run<T: Erf>(x: &[T], grad: Option<(&[T], &[T])>) -> Vec<T> {
        let mut out = vec![T::default(); x.len()];
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(k, chunk)| {
            // Constants made here rather than captured by reference (see `ops::relu6`).
            let (half, one, root_half) = (T::from_f64(0.5), T::from_f64(1.0), T::from_f64(FRAC_1_SQRT_2));
            let inv_root_two_pi = T::from_f64(1.0 / (2.0 * PI).sqrt());
            let at = k * CHUNK..k * CHUNK + chunk.len();
            match grad {
                None => {
                    for (o, v) in chunk.iter_mut().zip(&x[at]) {
                        *o = ((*v * root_half).erf() + one) * half * *v;
                    }
                }
                Some((y, g)) => {
                    let small = T::from_f64(SMALL);
                    let zip = chunk.iter_mut().zip(&x[at.clone()]).zip(&y[at.clone()]).zip(&g[at]);
                    for (((o, v), yv), gv) in zip {
                        let pdf = (T::from_f64(-0.5) * *v * *v).exp() * inv_root_two_pi;
                        let tiny = *v < small && T::from_f64(-SMALL) < *v;
                        let cdf = if tiny { half + *v * inv_root_two_pi } else { *yv / *v };
                        *o = *gv * (cdf + *v * pdf);
                    }
                }
            }
        });
        out
    }
    fn typed<T: Erf>(x: &Tensor, grad: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
        let v = match grad {
            None => with_slice::<T, _>(x, |x| run(x, None))?,
            Some((y, g)) => {
                with_slice::<T, _>(x, |x| with_slice::<T, _>(y, |y| with_slice::<T, _>(g, |g| run(x, Some((y, g))))))???
            }
        };
        Tensor::from_vec(v, x.shape(), &candle_core::Device::Cpu)
    }
    match x.dtype() {
        DType::F32 => typed::<f32>(x, grad),
        _ => typed::<f64>(x, grad),
    }
}
