//! Access to the values of CPU tensors for graft's hand-written CPU kernels (the depthwise
//! convolution, batch normalisation): which tensors they can take, and a borrowed slice of a
//! tensor's contiguous values. Every kernel has a tensor-op form that other devices and dtypes
//! use.

use candle_core::{DType, Result, Storage, Tensor, WithDType};
use std::ops::{Add, AddAssign, Mul, Sub};

/// The element types the CPU kernels run in (`f32`, `f64`).
pub(super) trait Float:
    WithDType + Default + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + AddAssign
{
}
impl Float for f32 {}
impl Float for f64 {}

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
