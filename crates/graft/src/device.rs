//! Choosing where tensors live and in which precision.
//!
//! Every core path takes a candle [`Device`] and [`DType`]; this module turns user-facing names
//! (`cpu`, `cuda`, `cuda:1`, `f32`, `bf16`, ...) into those values.

use crate::{GraftError, Result};
use candle_core::{DType, Device};

/// Parses a device name: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(ordinal)) => Ok(Device::new_cuda(ordinal)?),
            _ => Err(GraftError::Input(format!(
                "unknown device `{other}`: use `cpu`, `cuda` or `cuda:N`"
            ))),
        },
    }
}

/// Parses a dtype name: `f32`, `f64`, `bf16` or `f16`.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "f64" => Ok(DType::F64),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(GraftError::Input(format!(
            "unknown dtype `{other}`: use f32, f64, bf16 or f16"
        ))),
    }
}

/// Number of threads candle's CPU kernels use (what benchmarks report).
pub fn cpu_threads() -> usize {
    candle_core::utils::get_num_threads()
}
