//! Device parity: the same computations on two (device, dtype) sides, compared number by number.
//!
//! The golden files in `tests/golden/` pin graft's CPU results to a PyTorch reference on the real
//! model weights; a GPU machine may not have those weights. This module checks a device against
//! the CPU instead, on seeded random weights of the default model's shapes, so the CPU's
//! golden-tested results carry over to the device. It compares:
//!
//! - `logits`: the inference forward (KV-cache path) over a seeded `[batch, seq]` block of ids;
//! - `loss`: the training forward's mean next-token loss over the same ids, with LoRA attached;
//! - `lora_grads`: the gradients of that loss for every LoRA factor (r 8 on all seven projections
//!   of every layer, deterministic non-zero factors as in `tests/golden/lora_grads.json`);
//! - `train_losses`: the loss curve of a few AdamW steps of LoRA training on one fixed batch.
//!
//! Differences are reported relative to the reference's scale (`max |Δ| / max |reference|`; for
//! gradients `‖Δ‖₂ / ‖reference‖₂`) and judged against limits that depend on the less precise
//! dtype of the two sides.

use crate::adapters::lora::{self, LoraLayer, LoraSpec};
use crate::bench::train::LORA_TARGETS;
use crate::bench::{bench_train, TrainBenchSpec, TrainMode};
use crate::models::llama::config::LlamaConfig;
use crate::models::llama::random::{smollm2_135m_config, RandomWeights};
use crate::models::llama::{Llama, LoadOptions, Pass, WeightFormat};
use crate::models::Model;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

/// Which model shapes the checks run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParityShape {
    /// The default model's shapes (SmolLM2-135M: 30 layers, vocabulary 49,152).
    Default,
    /// A two-layer model with a 512-token vocabulary: seconds on a CPU, for tests.
    Tiny,
}

impl ParityShape {
    /// The model configuration of this shape.
    pub fn config(self) -> LlamaConfig {
        let default = smollm2_135m_config();
        match self {
            ParityShape::Default => default,
            ParityShape::Tiny => LlamaConfig {
                vocab_size: 512,
                hidden_size: 64,
                intermediate_size: 160,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                num_key_value_heads: 2,
                head_dim: Some(16),
                max_position_embeddings: 1024,
                ..default
            },
        }
    }
}

/// What to run on each side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ParitySpec {
    /// Model shapes.
    pub shape: ParityShape,
    /// Tokens per sequence.
    pub seq: usize,
    /// Sequences.
    pub batch: usize,
    /// AdamW steps of the training curve (0 = no training check).
    pub train_steps: usize,
    /// Learning rate of the training curve.
    pub train_lr: f64,
    /// Seed of the weights and the token ids.
    pub seed: u64,
}

impl Default for ParitySpec {
    fn default() -> Self {
        Self { shape: ParityShape::Default, seq: 64, batch: 2, train_steps: 5, train_lr: 1e-3, seed: 0 }
    }
}

/// Where and in which precision one side computes.
#[derive(Debug, Clone)]
pub struct Side {
    /// The device.
    pub device: Device,
    /// Weight and activation dtype.
    pub dtype: DType,
}

/// How strict the comparison is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tolerance {
    /// For two f32 (or f64) sides: only summation order may differ.
    Tight,
    /// When a side computes in bf16 or f16: rounding to 8 or 11 mantissa bits at every op.
    Loose,
}

impl Tolerance {
    /// `Tight` when both dtypes are f32 or f64, else `Loose`.
    pub fn for_dtypes(a: DType, b: DType) -> Self {
        let wide = |d: DType| matches!(d, DType::F32 | DType::F64);
        if wide(a) && wide(b) {
            Tolerance::Tight
        } else {
            Tolerance::Loose
        }
    }

    /// The largest accepted relative difference of check `name` (`lora_grads_tensor`: of the
    /// worst single gradient tensor).
    ///
    /// The loose limits are about five times what bf16 against f32 gives on the CPU for the
    /// default shapes (logits 0.019, loss 7e-5, gradients 0.021 with the worst tensor at 0.24,
    /// loss curve 1.3e-4): a device's bf16 against the CPU's bf16 carries two roundings.
    pub fn limit(self, name: &str) -> f64 {
        match (self, name) {
            (Tolerance::Tight, "lora_grads_tensor") => 1e-2,
            // A few AdamW steps: an element whose gradient is rounding noise gets a full-size
            // update of either sign, so the curves drift a little even when every op agrees.
            (Tolerance::Tight, "lora_grads" | "train_losses") => 1e-3,
            (Tolerance::Tight, _) => 1e-4,
            (Tolerance::Loose, "logits") => 0.1,
            (Tolerance::Loose, "lora_grads_tensor") => 0.6,
            (Tolerance::Loose, "lora_grads") => 0.1,
            (Tolerance::Loose, _) => 5e-3,
        }
    }
}

/// One compared quantity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// `logits`, `loss`, `lora_grads` or `train_losses`.
    pub name: String,
    /// Numbers compared.
    pub count: usize,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Largest absolute reference value (the scale differences are measured against).
    pub scale: f64,
    /// `max_abs / scale`; for `lora_grads` the relative L2 error `‖Δ‖ / ‖reference‖` of all
    /// adapter gradients together.
    pub rel: f64,
    /// The accepted `rel`.
    pub limit: f64,
    /// `rel <= limit` and every number finite.
    pub pass: bool,
    /// Facts specific to the check (argmax agreement, the two loss curves, the worst tensor).
    pub detail: serde_json::Value,
}

/// The result of [`compare`].
#[derive(Debug, Clone, Serialize)]
pub struct ParityReport {
    /// Device checked.
    pub device: String,
    /// Its dtype.
    pub dtype: String,
    /// Device of the reference side.
    pub reference_device: String,
    /// Dtype of the reference side.
    pub reference_dtype: String,
    /// Strictness applied.
    pub tolerance: Tolerance,
    /// What ran.
    pub spec: ParitySpec,
    /// One entry per compared quantity.
    pub checks: Vec<Check>,
    /// Every check passed.
    pub pass: bool,
    /// Seconds the reference side took.
    pub reference_secs: f64,
    /// Seconds the checked side took.
    pub secs: f64,
}

/// Everything one side computes, moved to the CPU in f32.
struct Outputs {
    logits: Vec<f32>,
    vocab: usize,
    loss: f64,
    grads: Vec<(String, Vec<f32>)>,
    train_losses: Vec<f64>,
}

/// Runs the checks of `spec` on `reference` and on `subject` and compares them with `tolerance`
/// (default: [`Tolerance::for_dtypes`] of the two sides).
pub fn compare(
    reference: &Side,
    subject: &Side,
    spec: &ParitySpec,
    tolerance: Option<Tolerance>,
) -> Result<ParityReport> {
    if spec.seq < 2 || spec.batch == 0 {
        return Err(GraftError::Input("parity checks need seq >= 2 and batch >= 1".into()));
    }
    let tolerance = tolerance.unwrap_or_else(|| Tolerance::for_dtypes(reference.dtype, subject.dtype));
    let start = Instant::now();
    let want = run_side(reference, spec)?;
    let reference_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let got = run_side(subject, spec)?;
    let secs = start.elapsed().as_secs_f64();

    let mut checks = Vec::new();
    let (abs, scale) = max_diff(&got.logits, &want.logits);
    checks.push(check(
        "logits",
        got.logits.len(),
        abs,
        scale,
        tolerance,
        argmax_detail(&got.logits, &want.logits, want.vocab),
    ));
    let loss_abs = (got.loss - want.loss).abs();
    checks.push(check(
        "loss",
        1,
        loss_abs,
        want.loss.abs(),
        tolerance,
        serde_json::json!({"loss": got.loss, "reference": want.loss}),
    ));
    checks.push(grads_check(&got.grads, &want.grads, tolerance)?);
    if spec.train_steps > 0 {
        let (abs, scale) = max_diff(&got.train_losses, &want.train_losses);
        let detail = serde_json::json!({"losses": got.train_losses, "reference": want.train_losses});
        checks.push(check("train_losses", got.train_losses.len(), abs, scale, tolerance, detail));
    }
    let pass = checks.iter().all(|c| c.pass);
    Ok(ParityReport {
        device: crate::device::device_name(&subject.device),
        dtype: dtype_name(subject.dtype),
        reference_device: crate::device::device_name(&reference.device),
        reference_dtype: dtype_name(reference.dtype),
        tolerance,
        spec: *spec,
        checks,
        pass,
        reference_secs,
        secs,
    })
}

/// `bf16`, `f32`, ...: the names `--dtype` takes.
fn dtype_name(dtype: DType) -> String {
    dtype.as_str().to_string()
}

fn check(name: &str, count: usize, max_abs: f64, scale: f64, tolerance: Tolerance, detail: serde_json::Value) -> Check {
    let rel = if scale > 0.0 { max_abs / scale } else { max_abs };
    let limit = tolerance.limit(name);
    Check { name: name.into(), count, max_abs, scale, rel, limit, pass: rel.is_finite() && rel <= limit, detail }
}

/// `(max |a - b|, max |b|)`; a non-finite value anywhere makes the difference infinite.
fn max_diff<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> (f64, f64) {
    if a.len() != b.len() {
        return (f64::INFINITY, 0.0);
    }
    a.iter().zip(b).fold((0.0, 0.0), |(d, s), (&x, &y)| {
        let (x, y): (f64, f64) = (x.into(), y.into());
        let diff = if x.is_finite() && y.is_finite() { (x - y).abs() } else { f64::INFINITY };
        (f64::max(d, diff), f64::max(s, y.abs()))
    })
}

/// Share of positions whose most likely token agrees (reported, not judged: near-ties flip).
fn argmax_detail(a: &[f32], b: &[f32], vocab: usize) -> serde_json::Value {
    let argmax = |row: &[f32]| {
        row.iter().enumerate().fold((0, f32::NEG_INFINITY), |m, (i, &v)| if v > m.1 { (i, v) } else { m }).0
    };
    let rows = a.len() / vocab.max(1);
    let same = a.chunks(vocab).zip(b.chunks(vocab)).filter(|(x, y)| argmax(x) == argmax(y)).count();
    serde_json::json!({"argmax_agreement": same as f64 / rows.max(1) as f64, "positions": rows})
}

/// Relative L2 error `‖a − b‖ / ‖b‖` and cosine of two gradient tensors (`b` the reference).
fn l2_error(a: &[f32], b: &[f32]) -> (f64, f64) {
    if a.len() != b.len() {
        return (f64::INFINITY, 0.0);
    }
    let (mut diff, mut aa, mut bb, mut ab) = (0f64, 0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        diff += (x - y) * (x - y);
        aa += x * x;
        bb += y * y;
        ab += x * y;
    }
    let rel = if bb > 0.0 { (diff / bb).sqrt() } else { diff.sqrt() };
    let cos = if aa > 0.0 && bb > 0.0 { ab / (aa * bb).sqrt() } else { f64::from(u8::from(aa == bb)) };
    (if rel.is_nan() { f64::INFINITY } else { rel }, cos)
}

/// Every LoRA gradient compared as a whole: the check's `rel` is the relative L2 error of all
/// gradients together, and the worst single tensor's relative L2 error must stay under its own
/// (wider) limit: tensors whose gradients are small at random weights (the last layers' `q_proj`
/// `lora_A`) are ruled by rounding noise, but a kernel that breaks one projection's backward
/// still shows there.
fn grads_check(got: &[(String, Vec<f32>)], want: &[(String, Vec<f32>)], tolerance: Tolerance) -> Result<Check> {
    if got.len() != want.len() || got.is_empty() {
        return Err(GraftError::Input(format!(
            "parity: {} gradients on one side, {} on the other",
            got.len(),
            want.len()
        )));
    }
    let (mut worst, mut worst_name, mut min_cos, mut count) = (-1.0f64, String::new(), 1.0f64, 0);
    let (mut max_abs, mut scale, mut diff_sq, mut ref_sq) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for ((name, g), (_, w)) in got.iter().zip(want) {
        let (rel, cos) = l2_error(g, w);
        let (abs, sc) = max_diff(g, w);
        let norm_sq: f64 = w.iter().map(|&y| f64::from(y) * f64::from(y)).sum();
        (diff_sq, ref_sq) = (diff_sq + rel * rel * norm_sq, ref_sq + norm_sq);
        (max_abs, scale, min_cos) = (max_abs.max(abs), scale.max(sc), min_cos.min(cos));
        count += g.len();
        if rel > worst || rel.is_nan() {
            (worst, worst_name) = (rel, name.clone());
        }
    }
    let total = if ref_sq > 0.0 { (diff_sq / ref_sq).sqrt() } else { diff_sq.sqrt() };
    let (limit, tensor_limit) = (tolerance.limit("lora_grads"), tolerance.limit("lora_grads_tensor"));
    Ok(Check {
        name: "lora_grads".into(),
        count,
        max_abs,
        scale,
        rel: total,
        limit,
        pass: total.is_finite() && total <= limit && worst.is_finite() && worst <= tensor_limit,
        detail: serde_json::json!({
            "metric": "relative L2 error of all gradients together; each tensor's under tensor_limit",
            "tensors": got.len(),
            "worst_tensor": worst_name,
            "worst_tensor_rel": worst,
            "tensor_limit": tensor_limit,
            "min_cosine": min_cos,
        }),
    })
}

/// Seeded token ids `[batch · seq]` below `vocab`.
fn token_ids(spec: &ParitySpec, vocab: usize) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x05ee_d1d5);
    (0..spec.batch * spec.seq).map(|_| rng.random_range(0..vocab as u32)).collect()
}

fn load(side: &Side, spec: &ParitySpec) -> Result<Llama> {
    let cfg = spec.shape.config();
    let opts = LoadOptions { device: side.device.clone(), dtype: side.dtype, format: WeightFormat::Dense };
    Llama::load(cfg.clone(), &RandomWeights::new(cfg, spec.seed), &opts)
}

/// The seven-projection, rank-8 LoRA of the checks.
fn lora_spec() -> LoraSpec {
    LoraSpec { r: 8, alpha: 16.0, dropout: 0.0, rslora: false, targets: LORA_TARGETS.map(String::from).to_vec() }
}

fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
}

fn run_side(side: &Side, spec: &ParitySpec) -> Result<Outputs> {
    let ids = token_ids(spec, spec.shape.config().vocab_size);
    let (b, t) = (spec.batch, spec.seq);
    let dev = &side.device;
    let x = Tensor::from_vec(ids.clone(), (b, t), dev)?;

    // Inference forward through the KV-cache path.
    let mut model = load(side, spec)?;
    let logits = model.forward_infer(&x, &mut model.new_cache())?;
    let vocab = logits.dim(2)?;
    let logits = to_f32_vec(&logits)?;

    // Training forward and backward with deterministic, non-zero adapters.
    let lspec = lora_spec();
    let set = lora::attach_with(&mut model, &lspec, |name, (out, inp), clock| {
        let a: Vec<f32> = (0..lspec.r * inp).map(|k| 0.02 * (0.1 * k as f32 + 1.0).sin()).collect();
        let bv: Vec<f32> = (0..out * lspec.r).map(|k| 0.02 * (0.1 * k as f32 + 2.0).cos()).collect();
        let a = Tensor::from_vec(a, (lspec.r, inp), dev)?.to_dtype(side.dtype)?;
        let bt = Tensor::from_vec(bv, (out, lspec.r), dev)?.to_dtype(side.dtype)?;
        LoraLayer::from_tensors(name, &a, &bt, lspec.scale(), 0.0, clock)
    })?;
    let mut targets: Vec<u32> = Vec::with_capacity(b * t);
    let mut mask: Vec<f32> = Vec::with_capacity(b * t);
    for row in ids.chunks(t) {
        targets.extend_from_slice(&row[1..]);
        targets.push(0);
        mask.extend((0..t).map(|i| if i + 1 < t { 1.0 } else { 0.0 }));
    }
    let count = b * (t - 1);
    let targets = Tensor::from_vec(targets, (b, t), dev)?;
    let mask = Tensor::from_vec(mask, (b, t), dev)?;
    let loss = (model.token_nll(&x, &targets, &mask, Pass::Train)?.sum_all()? / count as f64)?;
    let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let store = loss.backward()?;
    let mut grads = Vec::new();
    for (name, var) in set.named_vars() {
        let g = store
            .get(var.as_tensor())
            .ok_or_else(|| GraftError::Input(format!("parity: no gradient reached {name}")))?;
        grads.push((name, to_f32_vec(g)?));
    }
    drop(store);
    lora::unload(&mut model);

    // A short LoRA training run (fresh PEFT-style adapters) on one fixed batch.
    let train_losses = if spec.train_steps > 0 {
        let tspec = TrainBenchSpec {
            mode: TrainMode::Lora,
            seq: t,
            batch: b,
            steps: spec.train_steps,
            warmup: 0,
            lr: spec.train_lr,
            seed: spec.seed,
            gradient_checkpointing: false,
            checkpoint_mode: crate::ops::CheckpointMode::Blocks,
            precision: crate::ops::MatmulPrecision::F32,
        };
        bench_train(&mut model, &ids, &tspec, &mut |_, _, _| {})?.losses
    } else {
        Vec::new()
    };
    Ok(Outputs { logits, vocab, loss: loss_value, grads, train_losses })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_diff_flags_non_finite_values_and_length_mismatch() {
        assert_eq!(max_diff(&[1.0f32, 2.0], &[1.5f32, -3.0]), (5.0, 3.0));
        assert_eq!(max_diff(&[f32::NAN], &[1.0f32]).0, f64::INFINITY);
        assert_eq!(max_diff(&[1.0f32], &[1.0f32, 2.0]).0, f64::INFINITY);
    }

    #[test]
    fn l2_error_is_relative_to_the_reference_norm() {
        let (rel, cos) = l2_error(&[3.0, 4.0], &[3.0, 4.0]);
        assert_eq!((rel, cos), (0.0, 1.0));
        let (rel, cos) = l2_error(&[0.0, 5.0], &[3.0, 4.0]);
        assert!((rel - (10f64).sqrt() / 5.0).abs() < 1e-12 && (cos - 0.8).abs() < 1e-12);
        assert_eq!(l2_error(&[f32::NAN], &[1.0]).0, f64::INFINITY);
    }

    #[test]
    fn tolerance_follows_the_less_precise_dtype() {
        assert_eq!(Tolerance::for_dtypes(DType::F32, DType::F32), Tolerance::Tight);
        assert_eq!(Tolerance::for_dtypes(DType::F32, DType::BF16), Tolerance::Loose);
        assert!(Tolerance::Tight.limit("logits") < Tolerance::Loose.limit("logits"));
    }

    #[test]
    fn argmax_agreement_counts_rows() {
        let a = [0.0f32, 1.0, 0.0, 5.0, 0.0, 0.0];
        let b = [0.0f32, 1.0, 0.0, 0.0, 0.0, 5.0];
        assert_eq!(argmax_detail(&a, &b, 3)["argmax_agreement"], 0.5);
    }
}
