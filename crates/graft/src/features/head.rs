//! Classification heads on fixed features: standardise each feature with the training set's
//! mean and standard deviation, then a linear map or a one-hidden-layer ReLU MLP, trained by the
//! [`Trainer`] with AdamW on the
//! [classification objective](crate::objectives::classification) in shuffled mini-batches.
//!
//! Standardising makes one learning rate fit every backbone: decoder residual streams have
//! features of very different scales, unit-norm sentence embeddings have tiny ones.

use crate::objectives::classification::{Classification, FixedFeatures, PooledFeatures};
use crate::report::LossPoint;
use crate::train::optim::{AdamWConfig, OptimizerKind};
use crate::train::schedule::{Schedule, ScheduleKind};
use crate::train::{Epochs, Event, LoopSettings, Objective, RunDir, StepRecord, Trainer};
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The head's shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum HeadKind {
    /// Logistic regression: `logits = x W + b`.
    Linear,
    /// One hidden layer: `logits = relu(x W₁ + b₁) W₂ + b₂`.
    Mlp {
        /// Hidden width.
        hidden: usize,
    },
}

/// How a head trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadConfig {
    /// Linear or MLP.
    pub kind: HeadKind,
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the initial weights and of the shuffling.
    pub seed: u64,
    /// Clip the global gradient norm of each step to this (0 = no clipping): a guard for
    /// objectives that can blow up, such as an adversarial domain loss.
    pub max_grad_norm: f64,
}

impl Default for HeadConfig {
    /// Linear, 30 epochs of batches of 32, AdamW at 1e-2 with weight decay 1e-2, seed 0, no
    /// gradient clipping.
    fn default() -> Self {
        Self {
            kind: HeadKind::Linear,
            epochs: 30,
            batch_size: 32,
            lr: 1e-2,
            weight_decay: 1e-2,
            seed: 0,
            max_grad_norm: 0.0,
        }
    }
}

impl HeadConfig {
    /// Refuses settings that cannot train, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GraftError::Input(m));
        if self.epochs == 0 {
            return bad("head: epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("head: batch_size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("head: lr must be a positive number, got {}", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("head: weight_decay must be 0 or more, got {}", self.weight_decay));
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return bad(format!("head: max_grad_norm must be 0 (off) or more, got {}", self.max_grad_norm));
        }
        if let HeadKind::Mlp { hidden: 0 } = self.kind {
            return bad("head: an MLP head needs hidden >= 1".into());
        }
        Ok(())
    }
}

/// Per-feature affine normalisation `(x − mean) / std` fitted on training features.
#[derive(Debug, Clone)]
pub struct Standardizer {
    pub(crate) mean: Tensor,
    pub(crate) std: Tensor,
}

impl Standardizer {
    /// Fits mean and (population) standard deviation per column of `x [n, d]`. A column that is
    /// (nearly) constant gets std 1, so it maps to (nearly) 0 instead of blowing up.
    pub fn fit(x: &Tensor) -> Result<Self> {
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean(0)?;
        let var = x.broadcast_sub(&mean)?.sqr()?.mean(0)?;
        let std: Vec<f32> = var.sqrt()?.to_vec1()?;
        let top = std.iter().copied().fold(0f32, f32::max);
        let floor = (top * 1e-6).max(f32::MIN_POSITIVE);
        let std: Vec<f32> = std.into_iter().map(|s| if s > floor { s } else { 1.0 }).collect();
        let std = Tensor::from_vec(std, mean.dims1()?, x.device())?;
        Ok(Self { mean, std })
    }

    /// `(x − mean) / std` for `x [n, d]` (any float dtype; computed in f32). Differentiable.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.to_dtype(DType::F32)?.broadcast_sub(&self.mean)?.broadcast_div(&self.std)?)
    }

    /// Feature width.
    pub fn dim(&self) -> usize {
        self.mean.dims()[0]
    }

    /// Where the statistics live (and a head on them is made).
    pub fn device(&self) -> &Device {
        self.mean.device()
    }
}

/// A trained head: the training features' standardisation, then linear or MLP layers.
#[derive(Debug, Clone)]
pub struct TrainedHead {
    kind: HeadKind,
    standardizer: Standardizer,
    /// `(weight [out, in], bias [out])` per layer, f32.
    layers: Vec<(Tensor, Tensor)>,
}

impl TrainedHead {
    /// Builds a head from its parts (layer weights `[out, in]`, biases `[out]`).
    pub fn from_parts(kind: HeadKind, standardizer: Standardizer, layers: Vec<(Tensor, Tensor)>) -> Result<Self> {
        let head = Self { kind, standardizer, layers };
        head.check_shapes().map_err(GraftError::Input)?;
        Ok(head)
    }

    /// Linear or MLP.
    pub fn kind(&self) -> HeadKind {
        self.kind
    }

    /// Feature width the head expects.
    pub fn dim(&self) -> usize {
        self.standardizer.dim()
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.layers.last().map_or(0, |(w, _)| w.dims()[0])
    }

    /// The standardisation fitted on the training features.
    pub fn standardizer(&self) -> &Standardizer {
        &self.standardizer
    }

    /// Class scores `[n, n_classes]` (f32) of features `feats [n, dim]`.
    pub fn logits(&self, feats: &Tensor) -> Result<Tensor> {
        let (_, d) = feats.dims2()?;
        if d != self.dim() {
            return Err(GraftError::Input(format!(
                "features have {d} columns but the head was trained on {}: use the same backbone, layer and pooling",
                self.dim()
            )));
        }
        let feats = feats.to_device(self.standardizer.mean.device())?;
        forward(&self.layers, &self.standardizer.apply(&feats)?)
    }

    /// The most likely class of each row of `feats [n, dim]`.
    pub fn predict(&self, feats: &Tensor) -> Result<Vec<usize>> {
        argmax_rows(&self.logits(feats)?)
    }

    /// Weights and biases trained (the standardisation is fitted, not trained).
    pub fn trainable_params(&self) -> usize {
        self.layers.iter().map(|(w, b)| w.elem_count() + b.elem_count()).sum()
    }

    /// Writes the head as safetensors: `standardize.mean`, `standardize.std`,
    /// `layers.{i}.weight` / `layers.{i}.bias` (one layer = linear, two = MLP). The file is
    /// written beside `path` and renamed into place.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = vec![
            ("standardize.mean".to_string(), self.standardizer.mean.clone()),
            ("standardize.std".to_string(), self.standardizer.std.clone()),
        ];
        for (i, (w, b)) in self.layers.iter().enumerate() {
            tensors.push((format!("layers.{i}.weight"), w.clone()));
            tensors.push((format!("layers.{i}.bias"), b.clone()));
        }
        crate::io::safetensors::save_atomic(tensors, path)
    }

    /// Reads a head written by [`TrainedHead::save`] onto `device`, checking that the tensors
    /// are all there and fit together.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let file = crate::io::safetensors::open_safetensors(path)?;
        let mut map = file.load_all(device)?;
        let mut take = |name: &str| -> Result<Tensor> {
            let t = map.remove(name).ok_or_else(|| {
                GraftError::model(
                    path,
                    format!("head file lacks tensor `{name}`; was it written by TrainedHead::save?"),
                )
            })?;
            Ok(t.to_dtype(DType::F32)?)
        };
        let standardizer = Standardizer { mean: take("standardize.mean")?, std: take("standardize.std")? };
        let mut layers = Vec::new();
        for i in 0..2 {
            if i == 1 && !file.names().contains(&"layers.1.weight") {
                break;
            }
            layers.push((take(&format!("layers.{i}.weight"))?, take(&format!("layers.{i}.bias"))?));
        }
        let kind = match layers.as_slice() {
            [_] => HeadKind::Linear,
            [(w, _), _] => HeadKind::Mlp { hidden: w.dims()[0] },
            _ => return Err(GraftError::model(path, "head file has no layers")),
        };
        let head = Self { kind, standardizer, layers };
        head.check_shapes().map_err(|r| GraftError::model(path, r))?;
        Ok(head)
    }

    fn check_shapes(&self) -> std::result::Result<(), String> {
        let d = self.standardizer.mean.dims();
        if d.len() != 1 || self.standardizer.std.dims() != d {
            return Err(format!(
                "standardisation mean {d:?} and std {:?} must be equal vectors",
                self.standardizer.std.dims()
            ));
        }
        let mut width = d[0];
        for (i, (w, b)) in self.layers.iter().enumerate() {
            match w.dims() {
                [out, inp] if *inp == width && b.dims() == [*out] => width = *out,
                dims => {
                    return Err(format!(
                        "layer {i}: weight {dims:?} and bias {:?} do not take {width} inputs",
                        b.dims()
                    ))
                }
            }
        }
        if width < 2 {
            return Err(format!("the head has {width} output classes; at least 2 needed"));
        }
        Ok(())
    }
}

/// Logits of standardised features `x [n, d]` through `layers`, ReLU between layers.
pub(crate) fn forward(layers: &[(Tensor, Tensor)], x: &Tensor) -> Result<Tensor> {
    let mut x = x.clone();
    for (i, (w, b)) in layers.iter().enumerate() {
        if i > 0 {
            x = x.relu()?;
        }
        x = x.matmul(&w.t()?)?.broadcast_add(b)?;
    }
    Ok(x)
}

/// The index of each row's largest value.
pub(crate) fn argmax_rows(logits: &Tensor) -> Result<Vec<usize>> {
    Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?.into_iter().map(|c| c as usize).collect())
}

/// Fresh head parameters as named variables (PyTorch's `nn.Linear` initialisation: uniform in
/// ±1/√fan_in, from `rng`).
pub(crate) fn init_params(
    kind: HeadKind,
    dim: usize,
    n_classes: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Vec<(String, Var)>> {
    let widths = match kind {
        HeadKind::Linear => vec![(dim, n_classes)],
        HeadKind::Mlp { hidden } => vec![(dim, hidden), (hidden, n_classes)],
    };
    let mut out = Vec::new();
    for (i, (inp, outw)) in widths.into_iter().enumerate() {
        let w = uniform_init(&[outw, inp], inp, rng, device)?;
        let b = uniform_init(&[outw], inp, rng, device)?;
        out.push((format!("head.layers.{i}.weight"), Var::from_tensor(&w)?));
        out.push((format!("head.layers.{i}.bias"), Var::from_tensor(&b)?));
    }
    Ok(out)
}

/// A tensor of `shape` drawn uniformly in ±1/√`fan_in` from `rng` (PyTorch's `nn.Linear`
/// initialisation of a weight or bias with `fan_in` inputs).
pub(crate) fn uniform_init(shape: &[usize], fan_in: usize, rng: &mut ChaCha8Rng, device: &Device) -> Result<Tensor> {
    uniform_within(shape, 1.0 / (fan_in as f32).sqrt(), rng, device)
}

/// A tensor of `shape` drawn uniformly in ±`bound` from `rng`.
pub(crate) fn uniform_within(shape: &[usize], bound: f32, rng: &mut ChaCha8Rng, device: &Device) -> Result<Tensor> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// `(weight, bias)` pairs of head variables made by [`init_params`], as plain tensors.
pub(crate) fn layers_of(params: &[(String, Var)], detach: bool) -> Vec<(Tensor, Tensor)> {
    params
        .chunks(2)
        .map(|p| {
            let (w, b) = (p[0].1.as_tensor(), p[1].1.as_tensor());
            if detach {
                (w.detach(), b.detach())
            } else {
                (w.clone(), b.clone())
            }
        })
        .collect()
}

/// Checks labels against the number of examples and classes, naming the first bad one.
pub fn check_labels(labels: &[usize], n: usize, n_classes: usize) -> Result<()> {
    if n == 0 {
        return Err(GraftError::Input("no training examples".into()));
    }
    if labels.len() != n {
        return Err(GraftError::Input(format!("{} labels for {n} examples: give one label per example", labels.len())));
    }
    if n_classes < 2 {
        return Err(GraftError::Input(format!("a classifier needs at least 2 classes, got {n_classes}")));
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l >= n_classes) {
        return Err(GraftError::Input(format!(
            "label {l} of example {i} is out of range: labels must be below n_classes = {n_classes}"
        )));
    }
    Ok(())
}

/// Where a head's training keeps its files and reports progress.
pub struct RunOutput<'a> {
    /// Checkpoints, `metrics.jsonl` and resume; `None` trains in memory only.
    pub dir: Option<RunDir>,
    /// Notes, the start and every step.
    pub on_event: &'a mut dyn FnMut(Event),
}

/// Trains a head on `features [n, d]` with `labels` (each below `n_classes`): one
/// [`LossPoint`] per epoch (1-based `step`), the mean cross-entropy over that epoch's batches.
pub fn train_head(
    features: &Tensor,
    labels: &[usize],
    n_classes: usize,
    cfg: &HeadConfig,
) -> Result<(TrainedHead, Vec<LossPoint>)> {
    fit_head(features, labels, n_classes, cfg, RunOutput { dir: None, on_event: &mut |_| {} })
}

/// [`train_head`] with checkpoints, `metrics.jsonl` and resume in `out.dir`, and progress
/// through `out.on_event`.
pub fn fit_head(
    features: &Tensor,
    labels: &[usize],
    n_classes: usize,
    cfg: &HeadConfig,
    out: RunOutput,
) -> Result<(TrainedHead, Vec<LossPoint>)> {
    cfg.validate()?;
    let (n, _) = features.dims2()?;
    check_labels(labels, n, n_classes)?;
    let x = features.to_dtype(DType::F32)?.detach();
    let standardizer = Standardizer::fit(&x)?;
    let objective = Classification::new(FixedFeatures(x), standardizer, labels, n_classes, cfg.kind, cfg.seed)?;
    fit_classifier(&objective, cfg, serde_json::Value::Null, out)
}

/// Runs `objective` on the trainer for `cfg.epochs` epochs of shuffled batches of
/// `cfg.batch_size` examples, AdamW at a constant `cfg.lr`; `backbone` describes the rest of the
/// setup for the resume check. Returns the head and its per-epoch mean losses.
pub(crate) fn fit_classifier<F: PooledFeatures>(
    objective: &Classification<F>,
    cfg: &HeadConfig,
    backbone: serde_json::Value,
    out: RunOutput,
) -> Result<(TrainedHead, Vec<LossPoint>)> {
    let n = objective.n_examples();
    let settings = serde_json::json!({
        "head": cfg, "examples": n, "head_params": objective.trained_head()?.trainable_params(), "backbone": backbone,
    });
    let losses = fit_epochs(objective, n, cfg, &settings, out)?;
    Ok((objective.trained_head()?, losses))
}

/// Runs an objective over `n` examples (a batch is a list of example indices) on the trainer
/// for `cfg.epochs` epochs of shuffled batches of `cfg.batch_size`, AdamW at a constant
/// `cfg.lr` with `cfg.weight_decay` (`cfg.kind` is not used). `settings` is what a resume must
/// match. Returns the per-epoch mean losses.
pub(crate) fn fit_epochs<O: Objective<Batch = Vec<usize>>>(
    objective: &O,
    n: usize,
    cfg: &HeadConfig,
    settings: &serde_json::Value,
    out: RunOutput,
) -> Result<Vec<LossPoint>> {
    let batch = cfg.batch_size;
    let mut batches = Epochs::new(|epoch| {
        let mut order: Vec<usize> = (0..n).collect();
        crate::data::shuffle(&mut order, cfg.seed, epoch);
        Ok(order.chunks(batch).map(<[usize]>::to_vec).collect())
    })?;
    let total_steps = cfg.epochs as u64 * batches.per_epoch();
    let loop_settings = LoopSettings {
        total_steps,
        grad_accum: 1,
        max_grad_norm: cfg.max_grad_norm,
        schedule: Schedule { kind: ScheduleKind::Constant, peak: cfg.lr, warmup: 0, total: total_steps },
        eval_every: 0,
        pcgrad: None,
        precision: crate::ops::MatmulPrecision::F32,
    };
    let run_dir = match out.dir {
        Some(dir) => {
            let text = serde_json::to_string(settings)?;
            Some(dir.with_settings(text.clone(), RunDir::same_text(&text)))
        }
        None => None,
    };
    let optimizer = OptimizerKind::AdamW(AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() });
    let trainer = Trainer { settings: loop_settings, optimizer, run_dir, evaluate: None };
    let outcome = trainer.run(objective, &mut batches, out.on_event)?;
    Ok(epoch_losses(&outcome.history, n, batch))
}

/// The mean loss per example of each epoch, from the steps' per-example means (the last batch
/// of an epoch may be smaller).
fn epoch_losses(history: &[StepRecord], n: usize, batch: usize) -> Vec<LossPoint> {
    let per_epoch = n.div_ceil(batch) as u64;
    let mut sums: BTreeMap<u64, f64> = BTreeMap::new();
    for r in history {
        let i = r.step - 1;
        let size = batch.min(n - (i % per_epoch) as usize * batch);
        *sums.entry(i / per_epoch).or_default() += r.loss * size as f64;
    }
    sums.into_iter().map(|(epoch, sum)| LossPoint { step: epoch + 1, loss: sum / n as f64 }).collect()
}
