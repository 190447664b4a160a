//! CPU kernels for the depthwise convolution of [`super::depthwise_conv`]: forward, input
//! gradient and kernel gradient as direct loops over each `H × W` plane, planes (or channels)
//! spread over the thread pool.
//!
//! The tensor form of the op runs each of the `KH·KW` taps as a strided broadcast multiply and an
//! add over the whole feature map, and its input gradient pads and concatenates a map per tap: on
//! a CPU that is memory traffic and allocation, not arithmetic (a profile of EfficientNet-Lite0
//! training put a fifth of the step in the depthwise backward alone). Here each output row is
//! built in place from the input rows it reads. The forward adds the taps in the tensor form's
//! order, so both give the same values; the gradients sum in another order (rounding only).
//!
//! The kernels take `f32` / `f64` CPU tensors; [`super::depthwise_conv`] keeps the
//! tensor form for every other device and dtype.

use super::cpu::{with_slice, Float};
use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// The shape of one depthwise convolution: padded input `[n, c, h, w]`, kernel `kh × kw`,
/// `stride`, output `oh × ow`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Runs the `f32` or `f64` instance of a kernel on the values of `a` and `b` (same dtype, CPU,
/// checked through [`super::cpu::applies`]) and wraps its output as a tensor of `shape`.
fn with_slices(
    a: &Tensor,
    b: &Tensor,
    shape: &[usize],
    f32_fn: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    f64_fn: impl FnOnce(&[f64], &[f64]) -> Vec<f64>,
) -> Result<Tensor> {
    let cpu = &candle_core::Device::Cpu;
    match (a.dtype(), b.dtype()) {
        (DType::F32, DType::F32) => Tensor::from_vec(with_slice(a, |a| with_slice(b, |b| f32_fn(a, b)))??, shape, cpu),
        (DType::F64, DType::F64) => Tensor::from_vec(with_slice(a, |a| with_slice(b, |b| f64_fn(a, b)))??, shape, cpu),
        (x, y) => candle_core::bail!("depthwise CPU kernel: needs two f32 or two f64 tensors, got {x:?} and {y:?}"),
    }
}

/// `y[n, c, a, b] = Σᵢⱼ w[c, i, j] · x[n, c, s·a + i, s·b + j]` for padded `x` and kernel `w`.
pub(super) fn forward(x: &Tensor, w: &Tensor, d: Dims) -> Result<Tensor> {
    with_slices(x, w, &[d.n, d.c, d.oh, d.ow], |x, w| forward_all(x, w, d), |x, w| forward_all(x, w, d))
}

/// The input's gradient `[n, c, h, w]` for the output gradient `g` and kernel `w`.
pub(super) fn input_grad(g: &Tensor, w: &Tensor, d: Dims) -> Result<Tensor> {
    with_slices(g, w, &[d.n, d.c, d.h, d.w], |g, w| input_grad_all(g, w, d), |g, w| input_grad_all(g, w, d))
}

/// The kernel's gradient `[c, 1, kh, kw]` for the padded input `x` and output gradient `g`.
pub(super) fn kernel_grad(x: &Tensor, g: &Tensor, d: Dims) -> Result<Tensor> {
    with_slices(x, g, &[d.c, 1, d.kh, d.kw], |x, g| kernel_grad_all(x, g, d), |x, g| kernel_grad_all(x, g, d))
}

/// One input plane split into its `stride²` phases, phase `(p, q)` holding
/// `x[s·r + p, s·col + q]` as an `hs × ws` block (zeros past the edge): every tap then reads a
/// contiguous run of one phase. With stride 1 the plane is its own single phase.
struct Phases<'a, T: Clone> {
    values: Cow<'a, [T]>,
    hs: usize,
    ws: usize,
}

impl<'a, T: Float> Phases<'a, T> {
    fn split(plane: &'a [T], d: &Dims) -> Self {
        let s = d.stride;
        if s == 1 {
            return Self { values: Cow::Borrowed(plane), hs: d.h, ws: d.w };
        }
        let (hs, ws) = (d.h.div_ceil(s), d.w.div_ceil(s));
        let mut values = vec![T::default(); s * s * hs * ws];
        for (r, row) in plane.chunks(d.w).enumerate() {
            for (col, v) in row.iter().enumerate() {
                values[(((r % s) * s + col % s) * hs + r / s) * ws + col / s] = *v;
            }
        }
        Self { values: Cow::Owned(values), hs, ws }
    }

    /// The values output row `a`'s tap `(i, j)` reads: `x[s·a + i, s·b + j]` for each `b`.
    fn tap(&self, d: &Dims, a: usize, i: usize, j: usize) -> &[T] {
        let start = tap_start(d, self.hs, self.ws, a, i, j);
        &self.values[start..start + d.ow]
    }
}

/// Where, in phase layout with `hs × ws` phases, the `ow` values output row `a`'s tap `(i, j)`
/// reads start.
fn tap_start(d: &Dims, hs: usize, ws: usize, a: usize, i: usize, j: usize) -> usize {
    let s = d.stride;
    (((i % s) * s + j % s) * hs + a + i / s) * ws + j / s
}

/// `Σ aᵢ · bᵢ` with eight running sums (the order a SIMD register adds in).
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let mut lanes = [T::default(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: T = ca.remainder().iter().zip(cb.remainder()).fold(T::default(), |acc, (x, y)| acc + *x * *y);
    for (xa, xb) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += xa[k] * xb[k];
        }
    }
    lanes.into_iter().fold(tail, |acc, v| acc + v)
}

fn forward_all<T: Float>(x: &[T], w: &[T], d: Dims) -> Vec<T> {
    let mut y = vec![T::default(); d.n * d.c * d.oh * d.ow];
    let taps = d.kh * d.kw;
    y.par_chunks_mut(d.oh * d.ow).enumerate().for_each(|(p, out)| {
        let phases = Phases::split(&x[p * d.h * d.w..(p + 1) * d.h * d.w], &d);
        let kernel = &w[(p % d.c) * taps..(p % d.c + 1) * taps];
        for (a, row) in out.chunks_mut(d.ow).enumerate() {
            for i in 0..d.kh {
                for j in 0..d.kw {
                    let k = kernel[i * d.kw + j];
                    for (o, v) in row.iter_mut().zip(phases.tap(&d, a, i, j)) {
                        *o += *v * k;
                    }
                }
            }
        }
    });
    y
}

fn input_grad_all<T: Float>(g: &[T], w: &[T], d: Dims) -> Vec<T> {
    let mut dx = vec![T::default(); d.n * d.c * d.h * d.w];
    let taps = d.kh * d.kw;
    let s = d.stride;
    dx.par_chunks_mut(d.h * d.w).enumerate().for_each(|(p, plane)| {
        let grad = &g[p * d.oh * d.ow..(p + 1) * d.oh * d.ow];
        let kernel = &w[(p % d.c) * taps..(p % d.c + 1) * taps];
        // Accumulate in phase layout (contiguous runs), then interleave back.
        let (hs, ws) = (d.h.div_ceil(s), d.w.div_ceil(s));
        let mut split = if s == 1 { Vec::new() } else { vec![T::default(); s * s * hs * ws] };
        let acc: &mut [T] = if s == 1 { plane } else { &mut split };
        for (a, row) in grad.chunks(d.ow).enumerate() {
            for i in 0..d.kh {
                for j in 0..d.kw {
                    let k = kernel[i * d.kw + j];
                    let start = tap_start(&d, hs, ws, a, i, j);
                    for (o, v) in acc[start..start + d.ow].iter_mut().zip(row) {
                        *o += *v * k;
                    }
                }
            }
        }
        if s > 1 {
            for (r, out) in plane.chunks_mut(d.w).enumerate() {
                for (col, o) in out.iter_mut().enumerate() {
                    *o = split[(((r % s) * s + col % s) * hs + r / s) * ws + col / s];
                }
            }
        }
    });
    dx
}

fn kernel_grad_all<T: Float>(x: &[T], g: &[T], d: Dims) -> Vec<T> {
    let taps = d.kh * d.kw;
    let mut dw = vec![T::default(); d.c * taps];
    dw.par_chunks_mut(taps).enumerate().for_each(|(c, acc)| {
        for n in 0..d.n {
            let p = n * d.c + c;
            let phases = Phases::split(&x[p * d.h * d.w..(p + 1) * d.h * d.w], &d);
            let grad = &g[p * d.oh * d.ow..(p + 1) * d.oh * d.ow];
            for (a, row) in grad.chunks(d.ow).enumerate() {
                for i in 0..d.kh {
                    for j in 0..d.kw {
                        acc[i * d.kw + j] += dot(phases.tap(&d, a, i, j), row);
                    }
                }
            }
        }
    });
    dw
}
