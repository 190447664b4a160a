//! Access to the values of CPU tensors for graft's hand-written CPU kernels (the depthwise
//! convolution, batch normalisation, the bf16 products): which tensors they can take, a borrowed
//! slice of a tensor's contiguous values, and a strided view of a matrix's. Every kernel has a tensor-op form that other devices and dtypes
//! use.

use super::bf16_gemm::MatRef;
use candle_core::{DType, Result, Storage, Tensor, WithDType};
use std::ops::{Add, AddAssign, Mul, MulAssign, Sub, SubAssign};
use std::sync::OnceLock;

/// The element types the CPU kernels run in (`f32`, `f64`).
pub(super) trait Float:
    WithDType + Default + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + AddAssign
{
}
impl Float for f32 {}
impl Float for f64 {}

/// [`Float`] with `num_traits`' math (`exp`, `max`, …) and compound assignment, for the kernels
/// that need them (the fused SiLU product, the cross-entropy rows).
pub(super) trait Real: Float + num_traits::Float + MulAssign + SubAssign {
    /// [`exp_sum`] through a vector form where this type and CPU have one.
    fn vector_exp_sum(_z: &[Self], _shift: Self, _out: Option<&mut [Self]>) -> Option<f64> {
        None
    }
}
impl Real for f32 {
    fn vector_exp_sum(z: &[f32], shift: f32, out: Option<&mut [f32]>) -> Option<f64> {
        super::exp_cpu::exp_sum_f32(z, shift, out)
    }
}
impl Real for f64 {}

/// The largest of `z` (−∞ for none).
pub(super) fn row_max<T: Real>(z: &[T]) -> T {
    z.iter().copied().fold(T::neg_infinity(), num_traits::Float::max)
}

/// `Σ exp(z − shift)` summed in f64 (tens of thousands of exponentials summed one by one in f32
/// lose about 1e-4 of a loss), each `exp(z − shift)` also written into `out` when given.
pub(super) fn exp_sum<T: Real>(z: &[T], shift: T, mut out: Option<&mut [T]>) -> f64 {
    if let Some(sum) = T::vector_exp_sum(z, shift, out.as_deref_mut()) {
        return sum;
    }
    match out {
        Some(out) => out.iter_mut().zip(z).fold(0f64, |s, (o, &v)| {
            *o = (v - shift).exp();
            s + <T as WithDType>::to_f64(*o)
        }),
        None => z.iter().map(|&v| <T as WithDType>::to_f64((v - shift).exp())).sum(),
    }
}

/// Values per parallel task of the element-wise kernels (SwiGLU, ReLU6, GELU): enough to
/// amortise handing work to a thread.
pub(super) const CHUNK: usize = 1 << 14;

/// Whether the CPU kernels can take `t`: a CPU tensor of `f32` or `f64`.
pub(super) fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// Runs `f` on the values of the CPU tensor `t` in row-major order (a contiguous copy first if
/// `t` is a strided view).
pub(super) fn with_slice<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("CPU kernel: the tensor is on {:?}", t.device().location());
    };
    let values = T::cpu_storage_as_slice(cpu)?;
    let (start, end) =
        layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("CPU kernel: not contiguous".into()))?;
    Ok(f(&values[start..end]))
}

/// Runs `f` on a 2-D f32 CPU tensor's values as a strided [`MatRef`], without a copy.
pub(super) fn with_view<R>(t: &Tensor, f: impl FnOnce(MatRef<'_>) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("CPU kernel: the tensor is on {:?}", t.device().location());
    };
    let values = <f32 as WithDType>::cpu_storage_as_slice(cpu)?;
    let (rows, cols) = t.dims2()?;
    let stride = layout.stride();
    Ok(f(MatRef { data: &values[layout.start_offset()..], rows, cols, row_stride: stride[0], col_stride: stride[1] }))
}

/// The widest instruction set the hand-written CPU kernels use on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SimdLevel {
    Scalar,
    /// AVX2 with FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// The above plus AVX-512 VNNI on 256-bit registers (AVX-512 VL).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

/// The best [`SimdLevel`] this CPU has, detected once.
pub(super) fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            if avx2 && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                return SimdLevel::Avx512Vnni;
            }
            if avx2 {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Scalar
    })
}

/// Output rows per parallel task when `n` rows are split over the pool: about four tasks per
/// thread (so a slow thread does not hold the others up), at least `min` rows each.
pub(super) fn rows_per_task(n: usize, min: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1) * 4).max(min)
}

/// `len` seeded values in [-1, 1) (a linear congruential generator), for the kernels' tests.
#[cfg(test)]
pub(super) fn seeded_values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
