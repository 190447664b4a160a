//! An image classifier on a pretrained EfficientNet-Lite0: a new head on the pooled 1280-wide
//! features, with the backbone frozen (a linear probe: features computed once) or its top units
//! trained too ([`EfficientNetLite::unfreeze_top`]: the head convolution, then stages from the
//! top, up to every layer) or LoRA adapters on its 1x1 convolutions trained
//! ([`EfficientNetLite::add_lora`]; see [`Backbone`]). It runs on the one trainer through the classification objective
//! (`objectives::classification`), so checkpoints, `metrics.jsonl` and exact resume are the
//! trainer's.
//!
//! Batch norms of a pretrained backbone stay in evaluation mode (running statistics; their
//! scale and shift train with their unit): fine-tuning on small CPU batches with batch
//! statistics would normalise with noisy estimates, and the running statistics would have to be
//! learned too. A network trained from scratch ([`Backbone::Scratch`]) has no statistics to
//! keep: it trains with batch statistics and learns running ones (momentum 0.1), which the
//! checkpoints carry and evaluation uses. The standardisation in front of the head is fitted on
//! the untrained backbone's features and then kept fixed, as for the text classifiers.

use super::preprocess::Preprocess;
use super::Image;
use crate::features::head::{
    check_labels, fit_classifier, fit_epochs, fit_head, HeadConfig, RunOutput, Standardizer, TrainedHead,
};
use crate::features::tune::BLOCK_LR_RATIO;
use crate::models::batch_norm::DEFAULT_MOMENTUM;
use crate::models::efficientnet::{EfficientNetLite, LITE0_UNITS};
use crate::objectives::classification::{Classification, PooledFeatures};
use crate::objectives::domain_adapted::{Alignment, DomainAdapted};
use crate::report::LossPoint;
use crate::train::ParamGroup;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor, Var};

/// How images become model inputs and how many go through the backbone at once.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    /// Resize, crop, normalisation and augmentation.
    pub preprocess: Preprocess,
    /// Seed of the training augmentation (random crop / flip as `preprocess` allows); `None`
    /// trains on centre crops. Each batch's draws follow from this seed and the batch's
    /// examples, so a resumed run repeats them.
    pub augment: Option<u64>,
    /// Images per backbone pass when computing features without gradients.
    pub batch: usize,
}

/// Images with their classes.
#[derive(Debug, Clone, Copy)]
pub struct LabelledImages<'a> {
    /// The images.
    pub images: &'a [&'a Image],
    /// Each image's class, below `n_classes`.
    pub labels: &'a [usize],
    /// Number of classes.
    pub n_classes: usize,
}

/// What of the backbone trains with the head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backbone {
    /// Nothing: a linear probe on features computed once.
    Frozen,
    /// The top `k` units (1 to [`LITE0_UNITS`]), at `lr ×` [`BLOCK_LR_RATIO`].
    TopUnits(usize),
    /// LoRA adapters of rank `r` and scale `alpha / r` on every 1x1 convolution, at
    /// `lr ×` [`LORA_LR_RATIO`]; the base weights stay frozen.
    Lora {
        /// Rank of each update.
        r: usize,
        /// Scaling numerator α.
        alpha: f64,
    },
    /// Every layer of a randomly initialised network (`EfficientNetLite::random`), at
    /// `lr ×` [`SCRATCH_LR_RATIO`], batch norms on batch statistics with running statistics
    /// learned: the from-scratch baseline of the same architecture.
    Scratch,
}

impl Backbone {
    /// `Frozen` for 0 units, `TopUnits(k)` otherwise.
    pub fn top_units(k: usize) -> Self {
        if k == 0 {
            Backbone::Frozen
        } else {
            Backbone::TopUnits(k)
        }
    }
}

/// Learning-rate multiple of the LoRA factors relative to the head's `lr`: ten times the
/// [`BLOCK_LR_RATIO`] of unfrozen units, since `B` starts at zero and the low-rank update must
/// grow from nothing rather than nudge pretrained weights, yet well below the head's own rate,
/// as every factor's change moves the features all later layers and the head read.
pub const LORA_LR_RATIO: f64 = 0.1;

/// Learning-rate multiple of a from-scratch network's weights relative to the head's `lr`: 1,
/// one rate for the whole network, as a CNN is trained from scratch. The head's default rate
/// (1e-2, made for heads on pretrained features) is too high here: on MNIST digits it made the
/// loss climb, where 1e-3 (the usual Adam rate from scratch) lowered it, so from-scratch runs
/// set `head.lr = 1e-3` (docs/vision.md).
pub const SCRATCH_LR_RATIO: f64 = 1.0;

/// A head on EfficientNet-Lite0 whose top units or LoRA adapters may have been trained; those
/// weights live in the model passed to [`fit_image_classifier`], so predict with it.
#[derive(Debug, Clone)]
pub struct ImageClassifier {
    head: TrainedHead,
    backbone: Backbone,
    backbone_params: usize,
}

impl ImageClassifier {
    /// The class of each image, from `model` (the one trained with).
    pub fn predict(&self, model: &EfficientNetLite, images: &[&Image], input: &ImageInput) -> Result<Vec<usize>> {
        self.head.predict(&image_features(model, images, input)?)
    }

    /// Head weights plus the trained backbone weights (units or LoRA factors).
    pub fn trainable_params(&self) -> usize {
        self.head.trainable_params() + self.backbone_params
    }

    /// The head (standardisation and layers).
    pub fn head(&self) -> &TrainedHead {
        &self.head
    }

    /// How many of the backbone's top units were trained (0 for a probe or LoRA, every unit
    /// from scratch).
    pub fn unfreeze_top(&self) -> usize {
        match self.backbone {
            Backbone::TopUnits(k) => k,
            Backbone::Scratch => LITE0_UNITS,
            _ => 0,
        }
    }

    /// What of the backbone was trained.
    pub fn backbone(&self) -> Backbone {
        self.backbone
    }
}

/// Pooled features `[n, 1280]` (f32) of `images` through the frozen `model`, centre-cropped, in
/// batches of `input.batch`, without gradients.
pub fn image_features(model: &EfficientNetLite, images: &[&Image], input: &ImageInput) -> Result<Tensor> {
    features_of(model, images, input, false)
}

/// [`image_features`], with batch norms on each pass's own statistics when `batch_stats` (the
/// features an untrained from-scratch network gives in training; its running statistics are
/// still the initial ones).
fn features_of(model: &EfficientNetLite, images: &[&Image], input: &ImageInput, batch_stats: bool) -> Result<Tensor> {
    if input.batch == 0 {
        return Err(GraftError::Input("images per backbone pass must be at least 1".into()));
    }
    let device = model.device();
    let mut parts = Vec::with_capacity(images.len().div_ceil(input.batch));
    for chunk in images.chunks(input.batch) {
        let x = input.preprocess.batch(chunk, None, &device)?.to_dtype(model.dtype())?;
        parts.push(model.features(&x, batch_stats)?.detach().to_dtype(DType::F32)?);
    }
    if parts.is_empty() {
        return Err(GraftError::Input("no images to compute features of".into()));
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Trains a head of `cfg.kind` on `data` and, with
/// `unfreeze_top > 0`, the top units of `model` at `cfg.lr ×` [`BLOCK_LR_RATIO`] without weight
/// decay (their weights become variables of `model` and are updated in place). Checkpoints,
/// `metrics.jsonl` and resume go to `out.dir`. Returns the classifier and its per-epoch mean
/// losses. [`fit_image_classifier_with`] trains LoRA adapters instead.
pub fn fit_image_classifier(
    model: &mut EfficientNetLite,
    data: LabelledImages<'_>,
    unfreeze_top: usize,
    input: &ImageInput,
    cfg: &HeadConfig,
    out: RunOutput,
) -> Result<(ImageClassifier, Vec<LossPoint>)> {
    fit_image_classifier_with(model, data, Backbone::top_units(unfreeze_top), input, cfg, out)
}

/// Trains a head of `cfg.kind` on `data` with `backbone` trained too: top units at `cfg.lr ×`
/// [`BLOCK_LR_RATIO`], or LoRA adapters (attached to `model`, `A` seeded with `cfg.seed`) at
/// `cfg.lr ×` [`LORA_LR_RATIO`], both without weight decay and in their own parameter group.
/// The trained weights stay in `model` ([`EfficientNetLite::save`] writes LoRA merged).
pub fn fit_image_classifier_with(
    model: &mut EfficientNetLite,
    data: LabelledImages<'_>,
    backbone: Backbone,
    input: &ImageInput,
    cfg: &HeadConfig,
    out: RunOutput,
) -> Result<(ImageClassifier, Vec<LossPoint>)> {
    fit(model, data, None, backbone, input, cfg, out)
}

/// Unlabelled target-domain images and how the features are pulled towards them.
#[derive(Debug, Clone)]
pub struct Adaptation<'a> {
    /// The target domain's (unlabelled) training images.
    pub images: &'a [&'a Image],
    /// CORAL, MMD or DANN.
    pub alignment: Alignment,
    /// Weight of the alignment loss against the source cross-entropy.
    pub weight: f64,
}

/// [`fit_image_classifier_with`] on labelled source images `data` with the trained backbone's
/// features aligned to `target`'s images (`objectives::domain_adapted`): each step's source
/// cross-entropy plus `target.weight ×` the alignment between its source features and as many
/// target features. The backbone must train (top units or LoRA): a frozen one cannot move its
/// features.
pub fn fit_image_classifier_adapted(
    model: &mut EfficientNetLite,
    data: LabelledImages<'_>,
    target: &Adaptation<'_>,
    backbone: Backbone,
    input: &ImageInput,
    cfg: &HeadConfig,
    out: RunOutput,
) -> Result<(ImageClassifier, Vec<LossPoint>)> {
    if matches!(backbone, Backbone::Frozen | Backbone::TopUnits(0)) {
        return Err(GraftError::Input(
            "domain adaptation needs a trained backbone (top units or LoRA): frozen features cannot move".into(),
        ));
    }
    if target.images.is_empty() {
        return Err(GraftError::Input("domain adaptation needs target images".into()));
    }
    fit(model, data, Some(target), backbone, input, cfg, out)
}

fn fit(
    model: &mut EfficientNetLite,
    data: LabelledImages<'_>,
    target: Option<&Adaptation<'_>>,
    backbone: Backbone,
    input: &ImageInput,
    cfg: &HeadConfig,
    out: RunOutput,
) -> Result<(ImageClassifier, Vec<LossPoint>)> {
    cfg.validate()?;
    input.preprocess.validate()?;
    let LabelledImages { images, labels, n_classes } = data;
    check_labels(labels, images.len(), n_classes)?;
    if let Backbone::TopUnits(k) = backbone {
        if k > LITE0_UNITS {
            return Err(GraftError::Input(format!(
                "cannot unfreeze the top {k} units of EfficientNet-Lite0: it has {LITE0_UNITS} (stem, 7 stages, head)"
            )));
        }
    }
    // Before tracking starts, so computing them leaves the running statistics as they are.
    let initial = features_of(model, images, input, backbone == Backbone::Scratch)?;
    let mut buffers = Vec::new();
    let done = |head: TrainedHead, backbone_params: usize| ImageClassifier { head, backbone, backbone_params };
    let (vars, lr_scale, described) = match backbone {
        Backbone::Frozen | Backbone::TopUnits(0) => {
            let (head, losses) = fit_head(&initial, labels, n_classes, cfg, out)?;
            return Ok((done(head, 0), losses));
        }
        Backbone::TopUnits(k) => (model.unfreeze_top(k)?, BLOCK_LR_RATIO, ("unfreeze_top", serde_json::json!(k))),
        Backbone::Lora { r, alpha } => (
            model.add_lora(r, alpha, cfg.seed)?,
            LORA_LR_RATIO,
            ("lora", serde_json::json!({ "r": r, "alpha": alpha })),
        ),
        Backbone::Scratch => {
            buffers = model.track_running_stats(DEFAULT_MOMENTUM)?;
            (model.unfreeze_top(LITE0_UNITS)?, SCRATCH_LR_RATIO, ("scratch", serde_json::json!(true)))
        }
    };
    let batch_stats = backbone == Backbone::Scratch;
    let standardizer = Standardizer::fit(&initial)?;
    let backbone_params = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let units = ParamGroup { name: "backbone".into(), vars, lr_scale, weight_decay: Some(0.0) };
    let (key, value) = described;
    let mut meta = serde_json::json!({
        "model": "efficientnet-lite0",
        key: value,
        "resize": input.preprocess.resize,
        "crop": input.preprocess.crop,
        "augment": input.augment,
    });
    let Some(target) = target else {
        let features = TopUnits { model, images, input, units, batch_stats, buffers };
        let objective = Classification::new(features, standardizer, labels, n_classes, cfg.kind, cfg.seed)?;
        let (head, losses) = fit_classifier(&objective, cfg, meta, out)?;
        return Ok((done(head, backbone_params), losses));
    };
    // Source examples first, then the target's: the objective's rows index both.
    let all: Vec<&Image> = images.iter().chain(target.images).copied().collect();
    let features = TopUnits { model, images: &all, input, units, batch_stats, buffers };
    let inner = Classification::new(features, standardizer, labels, n_classes, cfg.kind, cfg.seed)?;
    let (n_source, n_target) = (images.len(), target.images.len());
    let total = (cfg.epochs * n_source.div_ceil(cfg.batch_size)) as u64;
    let objective =
        DomainAdapted::new(inner, n_source, n_target, target.alignment.clone(), target.weight, cfg.seed, total)?;
    meta["adaptation"] = serde_json::json!({
        "alignment": format!("{:?}", target.alignment), "weight": target.weight, "target_images": n_target,
    });
    let settings = serde_json::json!({
        "head": cfg, "examples": n_source, "head_params": objective.inner().trained_head()?.trainable_params(), "backbone": meta,
    });
    let losses = fit_epochs(&objective, n_source, cfg, &settings, out)?;
    Ok((done(objective.inner().trained_head()?, backbone_params), losses))
}

/// Features from the differentiable pass, gradients reaching the trained units or adapters.
struct TopUnits<'a> {
    model: &'a EfficientNetLite,
    images: &'a [&'a Image],
    input: &'a ImageInput,
    units: ParamGroup,
    /// Batch norms on batch statistics, updating the running ones (from scratch).
    batch_stats: bool,
    /// The running statistics those passes update.
    buffers: Vec<(String, Var)>,
}

impl PooledFeatures for TopUnits<'_> {
    fn pooled(&self, rows: &[usize]) -> Result<Tensor> {
        let batch: Vec<&Image> = rows.iter().map(|&i| self.images[i]).collect();
        // The batch's augmentation seed: the run's seed mixed with its examples (FNV-1a), a pure
        // function of the batch, so a resumed run draws the same crops and flips.
        let augment = self.input.augment.map(|seed| {
            rows.iter().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, &i| (h ^ i as u64).wrapping_mul(0x0100_0000_01b3))
        });
        let device: Device = self.model.device();
        let x = self.input.preprocess.batch(&batch, augment, &device)?.to_dtype(self.model.dtype())?;
        Ok(self.model.features(&x, self.batch_stats)?.to_dtype(DType::F32)?)
    }

    fn param_group(&self) -> Option<ParamGroup> {
        Some(self.units.clone())
    }

    fn buffers(&self) -> Vec<(String, Var)> {
        self.buffers.clone()
    }
}
