//! The values a tensor has once stored in a GGUF file as a given type, computed from ggml's
//! definition of the type rather than through the quantizer that writes the file, so the export
//! check can hold a written file against an independent reference.

use super::error::GgufError;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Tensor};
use half::f16;

/// Values per q8_0 block.
const Q8_0_BLOCK: usize = 32;

/// The f32 values of `t` once stored as `dtype` and read back (`name` labels errors):
/// - f32: unchanged;
/// - f16: IEEE half precision, rounded to nearest even;
/// - q8_0: each block of 32 consecutive values (along the innermost dimension) as
///   `d = max|x| / 127`, stored as f16, and `q = round(x · (1/d))` (half away from zero; 0 for an
///   all-zero block), read back as `q · d` — ggml's `quantize_row_q8_0_ref` and
///   `dequantize_row_q8_0`.
///
/// Other types are refused.
pub fn round_as_stored(name: &str, t: &Tensor, dtype: GgmlDType) -> Result<Tensor, GgufError> {
    let fail = |reason: String| GgufError::Build { item: format!("tensor `{name}`"), reason };
    let t = t.to_dtype(DType::F32).map_err(|e| fail(e.to_string()))?;
    match dtype {
        GgmlDType::F32 => Ok(t),
        GgmlDType::F16 => t.to_dtype(DType::F16).and_then(|h| h.to_dtype(DType::F32)).map_err(|e| fail(e.to_string())),
        GgmlDType::Q8_0 => {
            let inner = t.dims().last().copied().unwrap_or(0);
            if inner % Q8_0_BLOCK != 0 {
                return Err(fail(format!("innermost dimension {inner} is not a multiple of {Q8_0_BLOCK}")));
            }
            let values = t.flatten_all().and_then(|v| v.to_vec1::<f32>()).map_err(|e| fail(e.to_string()))?;
            let mut out = Vec::with_capacity(values.len());
            for block in values.chunks(Q8_0_BLOCK) {
                let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let stored_d = f16::from_f32(d).to_f32();
                out.extend(block.iter().map(|x| (x * id).round().clamp(-128.0, 127.0) * stored_d));
            }
            Tensor::from_vec(out, t.shape(), t.device()).map_err(|e| fail(e.to_string()))
        }
        other => Err(fail(format!("no reference rounding for ggml type {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::Device;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// candle's quantizer (what `GgufWriter` stores) gives exactly the reference values, on
    /// values that exercise ties, zero blocks, sign and f16 subnormal scales.
    #[test]
    fn reference_equals_candles_quantizer() {
        let mut v: Vec<f32> = (0..4096).map(|i| ((i as f32) * 0.7123).sin() * (1.0 + (i % 97) as f32)).collect();
        v[..32].fill(0.0);
        // max |x| = 127 gives d = 1: every other value is a tie, rounded away from zero.
        for (i, x) in v[32..64].iter_mut().enumerate() {
            *x = if i == 0 { 127.0 } else { i as f32 - 15.5 };
        }
        for x in &mut v[64..96] {
            *x *= 1e-7; // scale below f16's normal range
        }
        let t = Tensor::from_vec(v, (32, 128), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::F32, GgmlDType::F16, GgmlDType::Q8_0] {
            let want = QTensor::quantize(&t, dtype).unwrap().dequantize(&Device::Cpu).unwrap();
            let got = round_as_stored("t", &t, dtype).unwrap();
            assert_eq!(values(&got), values(&want), "{dtype:?}");
        }
        assert!(round_as_stored("t", &t, GgmlDType::Q4_0).is_err());
        let odd = Tensor::zeros((2, 48), DType::F32, &Device::Cpu).unwrap();
        assert!(round_as_stored("odd", &odd, GgmlDType::Q8_0).unwrap_err().to_string().contains("48"));
    }
}
