//! ReLU6, `min(max(x, 0), 6)`, as one graph node.
//!
//! Composed as `relu` then `minimum`, candle records two nodes whose backward builds comparison
//! masks against a broadcast constant and zero tensors to add them into: in EfficientNet training
//! that was a tenth of the step. Here the backward passes the gradient where `0 < x < 6` (read
//! off the output, as PyTorch's `hardtanh` backward does) in one pass. On the CPU (`f32`, `f64`)
//! both passes are loops; elsewhere they are tensor ops.

use super::attach::attach1;
use super::cpu::{applies, with_slice, Float, CHUNK};
use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

/// `min(max(x, 0), 6)` with a backward that passes the gradient where the output is strictly
/// between 0 and 6.
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    let xd = x.detach();
    let value = if applies(&xd) { cpu_map(&xd, None)? } else { xd.clamp(0f64, 6f64)? };
    if !x.track_op() {
        return Ok(value);
    }
    attach1(
        "relu6",
        x,
        value,
        Box::new(|_, y, g| {
            let g = g.to_dtype(y.dtype())?;
            if applies(y) {
                return Ok(Some(cpu_map(y, Some(&g))?));
            }
            let inside = (y.gt(0f64)? * y.lt(6f64)?)?.to_dtype(g.dtype())?;
            Ok(Some((g * inside)?))
        }),
    )
}

/// On the CPU: the clamp of `t` (`grad` absent), or `grad` where `t` (the output) is inside
/// `(0, 6)` and zero elsewhere.
fn cpu_map(t: &Tensor, grad: Option<&Tensor>) -> Result<Tensor> {
    fn run<T: Float>(t: &[T], grad: Option<&[T]>) -> Vec<T> {
        let mut out = vec![T::default(); t.len()];
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(k, chunk)| {
            // The constants are made here, not captured: through a captured reference the loop
            // reloads them on every value and is neither vectorised nor branch-free.
            let (zero, six) = (T::from_f64(0.0), T::from_f64(6.0));
            let at = k * CHUNK..k * CHUNK + chunk.len();
            match grad {
                None => {
                    for (o, v) in chunk.iter_mut().zip(&t[at]) {
                        // A NaN fails both tests and passes through, as in PyTorch: a diverged
                        // activation must reach the loss, not turn into 0.
                        *o = if *v < zero {
                            zero
                        } else if *v > six {
                            six
                        } else {
                            *v
                        };
                    }
                }
                Some(g) => {
                    for ((o, y), gv) in chunk.iter_mut().zip(&t[at.clone()]).zip(&g[at]) {
                        // `&`, not `&&`: both tests on every value, a select rather than a branch
                        // (about half the values are inside, so a branch mispredicts often).
                        *o = if (*y > zero) & (*y < six) { *gv } else { zero };
                    }
                }
            }
        });
        out
    }
    let cpu = &candle_core::Device::Cpu;
    match t.dtype() {
        DType::F32 => {
            let v = match grad {
                None => with_slice::<f32, _>(t, |t| run(t, None))?,
                Some(g) => with_slice::<f32, _>(t, |t| with_slice::<f32, _>(g, |g| run(t, Some(g))))??,
            };
            Tensor::from_vec(v, t.shape(), cpu)
        }
        _ => {
            let v = match grad {
                None => with_slice::<f64, _>(t, |t| run(t, None))?,
                Some(g) => with_slice::<f64, _>(t, |t| with_slice::<f64, _>(g, |g| run(t, Some(g))))??,
            };
            Tensor::from_vec(v, t.shape(), cpu)
        }
    }
}
