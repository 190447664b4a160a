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

/// The `ow` input values output row `a`'s tap `(i, j)` reads: `x[s·a + i, s·b + j]` for each `b`.
fn tap_row<T: Copy>(plane: &[T], d: Dims, a: usize, i: usize, j: usize) -> impl Iterator<Item = T> + '_ {
    let start = (d.stride * a + i) * d.w + j;
    plane[start..].iter().step_by(d.stride).take(d.ow).copied()
}

fn forward_all<T: Float>(x: &[T], w: &[T], d: Dims) -> Vec<T> {
    let mut y = vec![T::default(); d.n * d.c * d.oh * d.ow];
    let taps = d.kh * d.kw;
    y.par_chunks_mut(d.oh * d.ow).enumerate().for_each(|(p, out)| {
        let plane = &x[p * d.h * d.w..(p + 1) * d.h * d.w];
        let kernel = &w[(p % d.c) * taps..(p % d.c + 1) * taps];
        for (a, row) in out.chunks_mut(d.ow).enumerate() {
            for i in 0..d.kh {
                for j in 0..d.kw {
                    let k = kernel[i * d.kw + j];
                    for (o, v) in row.iter_mut().zip(tap_row(plane, d, a, i, j)) {
                        *o += v * k;
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
    dx.par_chunks_mut(d.h * d.w).enumerate().for_each(|(p, plane)| {
        let grad = &g[p * d.oh * d.ow..(p + 1) * d.oh * d.ow];
        let kernel = &w[(p % d.c) * taps..(p % d.c + 1) * taps];
        for (a, row) in grad.chunks(d.ow).enumerate() {
            for i in 0..d.kh {
                for j in 0..d.kw {
                    let k = kernel[i * d.kw + j];
                    let start = (d.stride * a + i) * d.w + j;
                    for (o, v) in plane[start..].iter_mut().step_by(d.stride).zip(row) {
                        *o += *v * k;
                    }
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
            let plane = &x[p * d.h * d.w..(p + 1) * d.h * d.w];
            let grad = &g[p * d.oh * d.ow..(p + 1) * d.oh * d.ow];
            for (a, row) in grad.chunks(d.ow).enumerate() {
                for i in 0..d.kh {
                    for j in 0..d.kw {
                        let mut sum = T::default();
                        for (v, gv) in tap_row(plane, d, a, i, j).zip(row) {
                            sum += v * *gv;
                        }
                        acc[i * d.kw + j] += sum;
                    }
                }
            }
        }
    });
    dw
}
