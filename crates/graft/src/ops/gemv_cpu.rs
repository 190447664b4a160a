//! `y = x Wᵀ` for one f32 row `x` and a dense f32 `W [n, k]` on the CPU, with the rows of `W`
//! split across the thread pool.
//!
//! Decoding one token multiplies a single row by every weight of the model. For that shape the
//! `gemm` crate (behind candle's matmul) takes a matrix-vector path that runs on one thread
//! whatever parallelism it is given, so one core streams all the weights while the others wait
//! (measured on a 2-core machine: 70 % of a dense decode step in that one thread). Here each
//! thread takes a strip of output rows: one contiguous dot product per row, eight FMA lanes wide.

use super::cpu::{rows_per_task, simd_level, with_slice, SimdLevel};
use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

/// Output rows per task below which splitting costs more than it gains.
const MIN_ROWS_PER_TASK: usize = 64;

/// `x [.., k] · Wᵀ` as `[.., n]` when `x` holds exactly one row and both are f32 CPU tensors;
/// `None` otherwise (the caller uses candle's matmul).
pub fn gemv(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let applies = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !applies(x) || !applies(w) || w.rank() != 2 {
        return Ok(None);
    }
    let (n, k) = w.dims2()?;
    if x.elem_count() != k || x.dims().last() != Some(&k) {
        return Ok(None);
    }
    let y = with_slice::<f32, _>(x, |xs| with_slice::<f32, _>(w, |ws| rows_dot(ws, xs, n, k)))??;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("checked above") = n;
    Ok(Some(Tensor::from_vec(y, dims, x.device())?))
}

/// Every row of `w` (`n` rows of `k`) dotted with `x`.
fn rows_dot(w: &[f32], x: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    let rows = rows_per_task(n, MIN_ROWS_PER_TASK);
    y.par_chunks_mut(rows).enumerate().for_each(|(task, out)| {
        let first = task * rows;
        for (r, o) in out.iter_mut().enumerate() {
            let j = first + r;
            *o = dot(&w[j * k..(j + 1) * k], x);
        }
    });
    y
}

/// `a · b` with the sum split over lanes, in the widest FMA form this CPU has.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    match simd_level() {
        SimdLevel::Scalar => dot_lanes(a, b),
        // SAFETY: every level above scalar has AVX2 and FMA, detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512Vnni => unsafe { dot_fma(a, b) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

/// Sixteen independent partial sums (two 256-bit registers, enough to hide the FMA latency),
/// then the tail.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_the_matmul_on_odd_shapes() {
        let dev = Device::Cpu;
        for &(n, k) in &[(1, 1), (3, 17), (130, 33), (700, 576)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (1, 1, k), &dev).unwrap();
            let got = gemv(&x, &w).unwrap().expect("one f32 row");
            assert_eq!(got.dims(), &[1, 1, n]);
            let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
            let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
            assert!(diff <= 1e-5 * scale * (k as f32).sqrt(), "{n}x{k}: {diff}");
        }
    }

    #[test]
    fn several_rows_or_other_dtypes_are_left_to_the_matmul() {
        let dev = Device::Cpu;
        let w = Tensor::zeros((4, 8), DType::F32, &dev).unwrap();
        assert!(gemv(&Tensor::zeros((2, 8), DType::F32, &dev).unwrap(), &w).unwrap().is_none());
        assert!(gemv(&Tensor::zeros((1, 8), DType::F64, &dev).unwrap(), &w).unwrap().is_none());
    }
}
