//! CPU kernels for the depthwise convolution of [`super::depthwise_conv`]: forward, input
//! gradient and kernel gradient as direct loops over each `H × W` plane, planes (or channels)
//! spread over the thread pool.
//!
//! The tensor form of the op runs each of the `KH·KW` taps as a strided broadcast multiply and an
//! add over the whole feature map, and its input gradient pads and concatenates a map per tap: on
//! a CPU that is memory traffic and allocation, not arithmetic (a profile of EfficientNet-Lite0
//! training put a fifth of the step in the depthwise backward alone). Here each tap is one
//! multiply-add over a contiguous run of one input plane (or one stride phase of it) into a
//! plane laid out with that row length (`Wide`), then copied out. The forward adds the taps in the tensor form's
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

/// One input plane split into its `stride²` phases, phase `(p, q)` holding
/// `x[s·r + p, s·col + q]` as an `hs × ws` block (zeros past the edge): every tap then reads one
/// contiguous run of one phase for the whole output plane (see [`Wide`]). With stride 1 the
/// plane is its own single phase.
struct Phases<'a, T> {
    values: &'a [T],
    hs: usize,
    ws: usize,
}

impl<'a, T: Float> Phases<'a, T> {
    /// The phases of `plane`, written into `scratch` (reused across planes) when the stride is
    /// above 1.
    fn split(plane: &'a [T], d: &Dims, scratch: &'a mut Vec<T>) -> Self {
        let s = d.stride;
        if s == 1 {
            return Self { values: plane, hs: d.h, ws: d.w };
        }
        let (hs, ws) = (d.h.div_ceil(s), d.w.div_ceil(s));
        let values = zeroed(scratch, s * s * hs * ws);
        for p in 0..s {
            for q in 0..s {
                let phase = &mut values[(p * s + q) * hs * ws..(p * s + q + 1) * hs * ws];
                for (r, out) in (p..d.h).step_by(s).zip(phase.chunks_mut(ws)) {
                    let row = &plane[r * d.w..(r + 1) * d.w];
                    for (o, v) in out.iter_mut().zip(row[q..].iter().step_by(s)) {
                        *o = *v;
                    }
                }
            }
        }
        Self { values, hs, ws }
    }

    /// The `len` values tap `(i, j)` reads for the wide output plane (see [`Wide`]).
    fn tap(&self, d: &Dims, i: usize, j: usize, len: usize) -> &[T] {
        let start = tap_start(d, self.hs, self.ws, i, j);
        &self.values[start..start + len]
    }
}

/// Where, in phase layout with `hs × ws` phases, the values output row 0's tap `(i, j)` reads
/// start; output row `a` reads `a · ws` further on.
fn tap_start(d: &Dims, hs: usize, ws: usize, i: usize, j: usize) -> usize {
    let s = d.stride;
    (((i % s) * s + j % s) * hs + i / s) * ws + j / s
}

/// The output plane laid out with the phases' row length `ws` instead of `ow`: element
/// `a · ws + b` is output `(a, b)` for `b < ow` and a spare value for `b ≥ ow`. In this layout
/// every kernel tap is one multiply-add over a contiguous run of `len = (oh − 1) · ws + ow`
/// values (the spare columns read values of the neighbouring columns, never past the phase),
/// instead of `oh` runs of `ow`: the feature maps of small images are only a few pixels wide.
struct Wide {
    ws: usize,
    len: usize,
}

impl Wide {
    fn of(d: &Dims, ws: usize) -> Self {
        Self { ws, len: (d.oh - 1) * ws + d.ow }
    }

    /// The compact `oh × ow` plane written from the wide one.
    fn compact<T: Float>(&self, wide: &[T], out: &mut [T], ow: usize) {
        for (row, src) in out.chunks_mut(ow).zip(wide.chunks(self.ws)) {
            row.copy_from_slice(&src[..ow]);
        }
    }

    /// The wide plane of the compact `oh × ow` plane `g`, the spare columns zero, written into
    /// `scratch`.
    fn widen<'s, T: Float>(&self, g: &[T], ow: usize, scratch: &'s mut Vec<T>) -> &'s [T] {
        let wide = zeroed(scratch, self.len);
        for (dst, row) in wide.chunks_mut(self.ws).zip(g.chunks(ow)) {
            dst[..ow].copy_from_slice(row);
        }
        wide
    }
}

/// `buffer` as `len` zeros (reusing its allocation: the kernels run once per plane, and a fresh
/// allocation for each of thousands of small planes costs more than the arithmetic).
fn zeroed<T: Float>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    buffer.clear();
    buffer.resize(len, T::default());
    buffer
}

/// `Σ aᵢ · bᵢ` with sixteen running sums (the order a SIMD register adds in).
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    const LANES: usize = 16;
    let mut lanes = [T::default(); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: T = ca.remainder().iter().zip(cb.remainder()).fold(T::default(), |acc, (x, y)| acc + *x * *y);
    for (xa, xb) in ca.zip(cb) {
        for k in 0..LANES {
            lanes[k] += xa[k] * xb[k];
        }
    }
    lanes.into_iter().fold(tail, |acc, v| acc + v)
}

/// `acc[k] += v[k] · scale` over the shorter of the two.
fn axpy<T: Float>(acc: &mut [T], v: &[T], scale: T) {
    for (o, x) in acc.iter_mut().zip(v) {
        *o += *x * scale;
    }
}

fn forward_all<T: Float>(x: &[T], w: &[T], d: Dims) -> Vec<T> {
    let mut y = vec![T::default(); d.n * d.c * d.oh * d.ow];
    let taps = d.kh * d.kw;
    y.par_chunks_mut(d.oh * d.ow).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(split, acc), (p, out)| {
            let phases = Phases::split(&x[p * d.h * d.w..(p + 1) * d.h * d.w], &d, split);
            let kernel = &w[(p % d.c) * taps..(p % d.c + 1) * taps];
            let wide = Wide::of(&d, phases.ws);
            let acc = zeroed(acc, wide.len);
            for i in 0..d.kh {
                for j in 0..d.kw {
                    axpy(acc, phases.tap(&d, i, j, wide.len), kernel[i * d.kw + j]);
                }
            }
            wide.compact(acc, out, d.ow);
        },
    );
    y
}

fn input_grad_all<T: Float>(g: &[T], w: &[T], d: Dims) -> Vec<T> {
    let mut dx = vec![T::default(); d.n * d.c * d.h * d.w];
    let taps = d.kh * d.kw;
    let s = d.stride;
    let (hs, ws) = if s == 1 { (d.h, d.w) } else { (d.h.div_ceil(s), d.w.div_ceil(s)) };
    let wide = Wide::of(&d, ws);
    dx.par_chunks_mut(d.h * d.w).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(grad, split), (p, plane)| {
            let grad = wide.widen(&g[p * d.oh * d.ow..(p + 1) * d.oh * d.ow], d.ow, grad);
            let kernel = &w[(p % d.c) * taps..(p % d.c + 1) * taps];
            // Accumulate in phase layout (contiguous runs), then interleave back.
            let acc: &mut [T] = if s == 1 { plane } else { zeroed(split, s * s * hs * ws) };
            for i in 0..d.kh {
                for j in 0..d.kw {
                    let start = tap_start(&d, hs, ws, i, j);
                    axpy(&mut acc[start..start + wide.len], grad, kernel[i * d.kw + j]);
                }
            }
            if s > 1 {
                for pr in 0..s {
                    for q in 0..s {
                        let phase = &split[(pr * s + q) * hs * ws..(pr * s + q + 1) * hs * ws];
                        for (r, src) in (pr..d.h).step_by(s).zip(phase.chunks(ws)) {
                            let row = &mut plane[r * d.w..(r + 1) * d.w];
                            for (o, v) in row[q..].iter_mut().step_by(s).zip(src) {
                                *o = *v;
                            }
                        }
                    }
                }
            }
        },
    );
    dx
}

fn kernel_grad_all<T: Float>(x: &[T], g: &[T], d: Dims) -> Vec<T> {
    let taps = d.kh * d.kw;
    let mut dw = vec![T::default(); d.c * taps];
    dw.par_chunks_mut(taps).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(split, wide_grad), (c, acc)| {
            for n in 0..d.n {
                let p = n * d.c + c;
                let phases = Phases::split(&x[p * d.h * d.w..(p + 1) * d.h * d.w], &d, split);
                let wide = Wide::of(&d, phases.ws);
                let grad = wide.widen(&g[p * d.oh * d.ow..(p + 1) * d.oh * d.ow], d.ow, wide_grad);
                for i in 0..d.kh {
                    for j in 0..d.kw {
                        acc[i * d.kw + j] += dot(phases.tap(&d, i, j, wide.len), grad);
                    }
                }
            }
        },
    );
    dw
}
