//! Inputs and comparisons shared by the unit tests of the CPU kernels.

use candle_core::{DType, Device, Tensor};

/// A deterministic tensor of `shape` in `dtype` with values spread over about ±2.7 (`seed`
/// shifts the pattern).
pub(super) fn values(shape: &[usize], seed: f64, dtype: DType) -> Tensor {
    let count: usize = shape.iter().product();
    let v: Vec<f64> = (0..count).map(|i| ((i as f64 + seed) * 0.613).sin() * 2.3 + 0.4).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

/// The largest absolute difference between `a` and `b`, in f64.
pub(super) fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap()).unwrap();
    d.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap()
}
