//! Image-classifier training steps on EfficientNet-Lite0: forward, backward and an AdamW update
//! of a batch of `[batch, 3, image, image]` inputs through the backbone and a linear head on its
//! pooled features, the workload `scripts/vision_torch_bench.py` runs in PyTorch with the same
//! architecture, shapes and optimizer; images/s and the loss of each step.
//!
//! Modes: `full` trains every convolution and batch-norm scale / shift with frozen batch norm
//! (full fine-tuning as `graft vision train` does it); `scratch` also normalises with batch
//! statistics and updates the running ones (training from scratch). Weights are random (the
//! work does not depend on their values), inputs and labels are drawn from a seeded stream.

use super::cpu::CpuSnapshot;
use super::median;
use crate::models::batch_norm::DEFAULT_MOMENTUM;
use crate::models::efficientnet::{EfficientNetLite, FEATURE_DIM, LITE0_UNITS};
use crate::train::optim::{AdamWConfig, Optimizer, OptimizerKind};
use crate::train::ParamGroup;
use crate::Result;
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

/// What [`bench_vision_train`] trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VisionTrainMode {
    /// Every layer, frozen batch norm.
    Full,
    /// Every layer, batch statistics with running statistics updated.
    Scratch,
}

/// The result of [`bench_vision_train`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisionTrainBench {
    /// The mode.
    pub mode: VisionTrainMode,
    /// Image side.
    pub image: usize,
    /// Images per step.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Median seconds per step.
    pub step_s: f64,
    /// Images per second at the median step.
    pub images_per_s: f64,
    /// Trained weights (backbone and head).
    pub trainable_params: usize,
    /// Loss of the first and last step (it should fall on the fixed batch).
    pub loss_first: f64,
    /// Loss of the last step.
    pub loss_last: f64,
    /// Percent of the machine's CPU other processes used while measuring.
    pub other_cpu_pct: Option<f64>,
}

/// Times `warmup + steps` training steps on one fixed random batch of `batch` images of side
/// `image` with 10 classes (AdamW at 1e-3, weight decay 1e-2).
pub fn bench_vision_train(
    mode: VisionTrainMode,
    image: usize,
    batch: usize,
    warmup: usize,
    steps: usize,
    device: &Device,
    dtype: DType,
) -> Result<VisionTrainBench> {
    let classes = 10;
    let mut model = EfficientNetLite::random(classes, 0, device, dtype)?;
    if mode == VisionTrainMode::Scratch {
        model.track_running_stats(DEFAULT_MOMENTUM)?;
    }
    let mut vars = model.unfreeze_top(LITE0_UNITS)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let head_w = crate::features::head::uniform_init(&[classes, FEATURE_DIM], FEATURE_DIM, &mut rng, device)?;
    let (w, b) = (Var::from_tensor(&head_w.to_dtype(dtype)?)?, Var::zeros(classes, dtype, device)?);
    vars.push(("head.weight".into(), w.clone()));
    vars.push(("head.bias".into(), b.clone()));
    let trainable_params = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let kind = OptimizerKind::AdamW(AdamWConfig { weight_decay: 1e-2, ..AdamWConfig::default() });
    let mut opt = Optimizer::with_groups(kind, vec![ParamGroup::new("all", vars.clone())])?;
    let n = batch * 3 * image * image;
    let pixels: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let x = Tensor::from_vec(pixels, (batch, 3, image, image), device)?.to_dtype(dtype)?;
    let labels: Vec<u32> = (0..batch).map(|_| rng.random_range(0..classes as u32)).collect();
    let y = Tensor::from_vec(labels, batch, device)?;
    let batch_stats = mode == VisionTrainMode::Scratch;
    let mut step = || -> Result<f64> {
        let logits = model.features(&x, batch_stats)?.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
        let (sum, count) = crate::train::loss::nll_sum(&logits, &y)?;
        let loss = (sum / count as f64)?;
        let grads = loss.backward()?;
        let g: Vec<Tensor> = vars
            .iter()
            .map(|(_, v)| grads.get(v.as_tensor()).cloned().map_or_else(|| v.as_tensor().zeros_like(), Ok))
            .collect::<candle_core::Result<_>>()?;
        opt.step(&g, 1e-3)?;
        Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    };
    let mut losses = Vec::new();
    for _ in 0..warmup {
        losses.push(step()?);
    }
    let before = CpuSnapshot::take();
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t0 = Instant::now();
        losses.push(step()?);
        device.synchronize()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let other_cpu_pct = before.zip(CpuSnapshot::take()).and_then(|(a, b)| a.other_pct(&b));
    let step_s = median(&times);
    Ok(VisionTrainBench {
        mode,
        image,
        batch,
        steps,
        step_s,
        images_per_s: batch as f64 / step_s,
        trainable_params,
        loss_first: losses.first().copied().unwrap_or(f64::NAN),
        loss_last: losses.last().copied().unwrap_or(f64::NAN),
        other_cpu_pct,
    })
}
