//! Throughput benchmarks reported by `graft bench`.
//!
//! Each benchmark runs `warmup` untimed repetitions, then `runs` timed ones, and reports the
//! median. What is measured matches the PyTorch reference runs described in `docs/benchmarks.md`:
//!
//! - [`generation`]: greedy generation at batch 1 (EOS masked so every run makes the same number
//!   of tokens); prefill tokens/s and decode tokens/s.
//! - [`forward`]: one inference forward (no gradients) over a `[batch, seq]` block of tokens,
//!   logits for every position included; tokens/s.
//! - [`train`]: optimizer steps of LoRA / QLoRA / full fine-tuning on packed text chunks;
//!   tokens/s and the loss curve.
//! - [`depthwise`]: the depthwise convolution op against candle's grouped convolution on
//!   EfficientNet-Lite0's layers; milliseconds forward and forward + backward.
//! - [`matmul`]: the products through a Llama's weights in f32 and in `bf16-mixed` precision;
//!   milliseconds and GFLOP/s per shape.
//! - [`vision`]: image-classifier training steps on EfficientNet-Lite0 (full fine-tuning or from
//!   scratch); images/s, beside `scripts/vision_torch_bench.py`'s PyTorch figures.
//! - [`cpu`]: how much CPU other processes used during each run (a busy neighbour ruins
//!   2-thread timings; such runs are flagged).
//! - [`memory`]: peak resident memory (VmHWM) and how to reset it.
//! - [`prompt`]: the fixed English text whose tokens the benchmarks feed the model.

pub mod cpu;
pub mod depthwise;
pub mod forward;
pub mod generation;
pub mod matmul;
pub mod memory;
pub mod prompt;
pub mod train;
pub mod vision;

pub use depthwise::{bench_depthwise, DepthwiseBench};
pub use forward::{bench_forward, ForwardBench};
pub use generation::{bench_generate, GenerateBench, GenerateRun};
pub use matmul::{bench_matmul, llama_product_shapes, MatmulBench, ProductBench, ProductShape};
pub use train::{bench_train, TrainBench, TrainBenchSpec, TrainMode};
pub use vision::{bench_vision_train, VisionTrainBench, VisionTrainMode};

/// How many times to repeat a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeats {
    /// Untimed runs first (caches, page faults, thread pools).
    pub warmup: usize,
    /// Timed runs; the report gives their median.
    pub runs: usize,
}

impl Default for Repeats {
    fn default() -> Self {
        Self { warmup: 1, runs: 5 }
    }
}

/// Median of `xs` (mean of the two middle values for an even count); 0 for no values.
/// Median milliseconds of `f` over the timed runs of `repeats` (after its untimed ones), each
/// run waiting for `device` to finish.
pub(crate) fn median_ms(
    device: &candle_core::Device,
    repeats: Repeats,
    mut f: impl FnMut() -> crate::Result<()>,
) -> crate::Result<f64> {
    let mut secs = Vec::with_capacity(repeats.runs);
    for i in 0..repeats.warmup + repeats.runs {
        let start = std::time::Instant::now();
        f()?;
        device.synchronize()?;
        if i >= repeats.warmup {
            secs.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(median(&secs) * 1e3)
}

pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
