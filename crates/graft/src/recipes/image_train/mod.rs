//! `graft vision train`: a new classification head on EfficientNet-Lite0, with the backbone
//! frozen (linear probe), its top units fine-tuned or LoRA adapters on its 1x1 convolutions
//! trained, trained on a share of a labelled image
//! dataset's labels and scored on its test images (`vision::classifier` on the one trainer).

pub mod config;

use crate::config::ModelInit;
use crate::domain_adapt::{information_maximization, mean_entropy, Bandwidths};
use crate::eval::classification::{report, ClassificationReport};
use crate::features::head::RunOutput;
use crate::models::efficientnet::EfficientNetLite;
use crate::objectives::domain_adapted::Alignment;
use crate::report::LossPoint;
use crate::train::{Event, RunDir};
use crate::vision::classifier::{
    fit_image_classifier_adapted, fit_image_classifier_with, image_features, Adaptation, Backbone, ImageClassifier,
    ImageInput, LabelledImages,
};
use crate::vision::{Image, ImageSet};
use crate::{GraftError, Result};
use config::{AdaptMethod, AdaptSection, ImageLora, ImageTrainConfig};
use serde::Serialize;
use std::time::Instant;

/// What `graft vision train` measured, written to `output.dir/summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageTrainSummary {
    /// The dataset.
    pub dataset: String,
    /// Share of each class's training labels used.
    pub label_fraction: f64,
    /// Labelled training images.
    pub train_examples: usize,
    /// Test images scored.
    pub test_examples: usize,
    /// `pretrained` or `random` (from scratch).
    pub init: ModelInit,
    /// Backbone units trained (0 = linear probe or LoRA; 9 = all, as from scratch).
    pub unfreeze_top: usize,
    /// The LoRA adapters trained on the 1x1 convolutions (`null` without).
    pub lora: Option<ImageLora>,
    /// Head weights plus trained backbone weights (units or LoRA factors).
    pub trainable_params: usize,
    /// Training wall time in seconds (this process's part of it).
    pub train_s: f64,
    /// Mean training loss per epoch.
    pub epoch_losses: Vec<LossPoint>,
    /// Test accuracy, macro-F1, per-class scores and the confusion matrix.
    pub test: ClassificationReport,
    /// With `[adapt]`: the target domain's test scores.
    pub target: Option<TargetScores>,
}

/// How the classifier does on the target domain's test images.
#[derive(Debug, Clone, Serialize)]
pub struct TargetScores {
    /// The target dataset.
    pub dataset: String,
    /// Target test images scored.
    pub test_examples: usize,
    /// Accuracy, macro-F1, per-class scores and confusion matrix (labels used for scoring only).
    pub test: ClassificationReport,
    /// Mean prediction entropy on those images (label-free model selection).
    pub mean_entropy: f64,
    /// Information maximisation score on them (label-free model selection).
    pub information_maximization: f64,
}

/// The target's training images (unlabelled; `adapt.target_limit` of them, a seeded draw),
/// test images and class names.
fn load_target(
    a: &AdaptSection,
    cfg: &ImageTrainConfig,
    on_event: &mut dyn FnMut(Event),
) -> Result<(ImageSet, ImageSet, Vec<String>)> {
    let (mut train, test, classes) = load_dataset(&a.target, cfg.model.offline)?;
    if a.target_limit > 0 && a.target_limit < train.images.len() {
        let mut order: Vec<usize> = (0..train.images.len()).collect();
        crate::data::shuffle(&mut order, cfg.data.seed, u64::MAX - 1);
        order.truncate(a.target_limit);
        order.sort_unstable();
        train = ImageSet {
            images: order.iter().map(|&i| train.images[i].clone()).collect(),
            labels: order.iter().map(|&i| train.labels[i]).collect(),
        };
    }
    on_event(Event::Note(format!(
        "target {}: {} unlabelled training images, {} test images",
        a.target,
        train.images.len(),
        test.images.len()
    )));
    Ok((train, test, classes))
}

/// Scores `classifier` on the target's test images.
fn score_target(
    name: &str,
    classifier: &ImageClassifier,
    model: &EfficientNetLite,
    test: &ImageSet,
    classes: &[String],
    input: &ImageInput,
) -> Result<TargetScores> {
    let images: Vec<&Image> = test.images.iter().collect();
    let logits = classifier.head().logits(&image_features(model, &images, input)?)?;
    let predicted = crate::features::head::argmax_rows(&logits)?;
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    Ok(TargetScores {
        dataset: name.to_string(),
        test_examples: images.len(),
        test: report(&test.labels, &predicted, &names),
        mean_entropy: mean_entropy(&logits)?,
        information_maximization: information_maximization(&logits)?,
    })
}

/// Per class, the first four fifths of `all` (in file order) for training and the rest for
/// testing.
fn split_per_class(all: ImageSet, n_classes: usize) -> (ImageSet, ImageSet) {
    let mut total = vec![0usize; n_classes];
    for &l in &all.labels {
        total[l] += 1;
    }
    let (mut train, mut test) = (ImageSet::default(), ImageSet::default());
    let mut seen = vec![0usize; n_classes];
    for (img, label) in all.images.into_iter().zip(all.labels) {
        let part = if seen[label] < total[label] * 4 / 5 { &mut train } else { &mut test };
        seen[label] += 1;
        part.images.push(img);
        part.labels.push(label);
    }
    (train, test)
}

/// The training and test images and the class names of the dataset `name`.
pub(crate) fn load_dataset(name: &str, offline: bool) -> Result<(ImageSet, ImageSet, Vec<String>)> {
    let digits = || (0..10).map(|d| d.to_string()).collect::<Vec<_>>();
    match name {
        "fashion-mnist" => Ok((
            crate::vision::idx::fashion_mnist("train", offline)?,
            crate::vision::idx::fashion_mnist("test", offline)?,
            crate::vision::idx::FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        )),
        "mnist-5k" => {
            let (train, test) = split_per_class(crate::vision::mnist_csv::mnist_5k(offline)?, 10);
            Ok((train, test, digits()))
        }
        "digits-8x8" => {
            let (train, test) = split_per_class(crate::vision::mnist_csv::digits_8x8(offline)?, 10);
            Ok((train, test, digits()))
        }
        other => Err(GraftError::Input(format!("unknown dataset `{other}`"))),
    }
}

/// EfficientNet-Lite0 from `name`: a `.safetensors` file, or an asset name fetched into the cache
/// (never downloaded when `offline`).
pub(crate) fn load_backbone(
    name: &str,
    offline: bool,
    device: &candle_core::Device,
    dtype: candle_core::DType,
) -> Result<EfficientNetLite> {
    let path = match std::path::Path::new(name) {
        p if p.is_file() => p.to_path_buf(),
        _ => crate::assets::ensure(name, offline)?,
    };
    EfficientNetLite::load(&path, device, dtype)
}

/// Indices of at most `limit` images of class `class` (all of them when `limit` is 0), drawn with
/// `seed` and `stream`, in ascending order.
pub(crate) fn class_sample(labels: &[usize], class: usize, limit: usize, seed: u64, stream: u64) -> Vec<usize> {
    let mut of_class: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
    crate::data::shuffle(&mut of_class, seed, stream);
    if limit > 0 {
        of_class.truncate(limit);
    }
    of_class.sort_unstable();
    of_class
}

/// What a config's data comes to, without training: for `graft validate`.
pub fn check(cfg: &ImageTrainConfig) -> Result<(usize, usize, usize)> {
    let (train, test, classes) = load_dataset(&cfg.data.dataset, cfg.model.offline)?;
    let picked = label_subset(&train.labels, classes.len(), cfg.data.label_fraction, cfg.data.seed);
    let test_n = match cfg.data.eval_limit {
        0 => test.labels.len(),
        n => n.min(test.labels.len()),
    };
    Ok((picked.len(), test_n, classes.len()))
}

/// Indices of `fraction` of each class's examples (at least one per class present), drawn with
/// `seed`, in ascending order.
pub fn label_subset(labels: &[usize], n_classes: usize, fraction: f64, seed: u64) -> Vec<usize> {
    let mut picked = Vec::new();
    for class in 0..n_classes {
        let mut of_class: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        if of_class.is_empty() {
            continue;
        }
        crate::data::shuffle(&mut of_class, seed, class as u64);
        let take = ((of_class.len() as f64 * fraction).round() as usize).clamp(1, of_class.len());
        picked.extend_from_slice(&of_class[..take]);
    }
    picked.sort_unstable();
    picked
}

/// Runs the config: trains (resuming from `output.dir` when `resume`), scores the test images,
/// writes `summary.json`, `head.safetensors` and, when backbone units, LoRA adapters or a
/// from-scratch network trained, `model.safetensors` (LoRA merged into the weights: a plain
/// checkpoint; from scratch with the learned running statistics).
pub fn run(cfg: &ImageTrainConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<ImageTrainSummary> {
    let (train, test, classes) = load_dataset(&cfg.data.dataset, cfg.model.offline)?;
    let n_classes = classes.len();
    let picked = label_subset(&train.labels, n_classes, cfg.data.label_fraction, cfg.data.seed);
    let images: Vec<&Image> = picked.iter().map(|&i| &train.images[i]).collect();
    let labels: Vec<usize> = picked.iter().map(|&i| train.labels[i]).collect();
    let mut order: Vec<usize> = (0..test.labels.len()).collect();
    crate::data::shuffle(&mut order, cfg.data.seed, u64::MAX);
    if cfg.data.eval_limit > 0 {
        order.truncate(cfg.data.eval_limit);
    }
    on_event(Event::Note(format!(
        "{}: {} labelled training images ({} of each class's), {} test images, {n_classes} classes",
        cfg.data.dataset,
        images.len(),
        cfg.data.label_fraction,
        order.len()
    )));

    let device = crate::device::parse_device(&cfg.model.device)?;
    let dtype = crate::device::parse_dtype(&cfg.model.dtype)?;
    let mut model = match cfg.model.init {
        ModelInit::Pretrained => load_backbone(&cfg.model.name, cfg.model.offline, &device, dtype)?,
        ModelInit::Random => EfficientNetLite::random(n_classes, cfg.head.seed, &device, dtype)?,
    };
    let backbone = cfg.train.backbone(cfg.model.init);
    let input = ImageInput {
        preprocess: cfg.input.preprocess(),
        augment: cfg.input.augments().then_some(cfg.head.seed),
        batch: cfg.input.batch,
    };
    let dir = &cfg.output.dir;
    let run_dir = RunDir::open(dir, resume, cfg.output.save_every)?;
    let data = LabelledImages { images: &images, labels: &labels, n_classes };
    let start = Instant::now();
    let target = cfg.adapt.as_ref().map(|a| load_target(a, cfg, &mut *on_event)).transpose()?;
    let out = RunOutput { dir: Some(run_dir), on_event: &mut *on_event };
    let (classifier, epoch_losses) = match (&cfg.adapt, &target) {
        (Some(a), Some((target_train, _, _))) => {
            let unlabelled: Vec<&Image> = target_train.images.iter().collect();
            let alignment = match a.method {
                AdaptMethod::Coral => Alignment::Coral,
                AdaptMethod::Mmd => Alignment::Mmd(Bandwidths::default()),
                AdaptMethod::Dann => Alignment::Dann { hidden: a.dann_hidden, gamma: a.dann_gamma },
            };
            let adaptation = Adaptation { images: &unlabelled, alignment, weight: a.weight };
            fit_image_classifier_adapted(&mut model, data, &adaptation, backbone, &input, &cfg.head, out)?
        }
        _ => fit_image_classifier_with(&mut model, data, backbone, &input, &cfg.head, out)?,
    };
    let train_s = start.elapsed().as_secs_f64();
    let target_scores = match (&cfg.adapt, &target) {
        (Some(a), Some((_, target_test, classes))) => {
            on_event(Event::Note(format!("scoring {} target test images of {}", target_test.labels.len(), a.target)));
            Some(score_target(&a.target, &classifier, &model, target_test, classes, &input)?)
        }
        _ => None,
    };

    on_event(Event::Note(format!("scoring {} test images", order.len())));
    let test_images: Vec<&Image> = order.iter().map(|&i| &test.images[i]).collect();
    let gold: Vec<usize> = order.iter().map(|&i| test.labels[i]).collect();
    let predicted = classifier.predict(&model, &test_images, &input)?;
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    let summary = ImageTrainSummary {
        dataset: cfg.data.dataset.clone(),
        label_fraction: cfg.data.label_fraction,
        train_examples: images.len(),
        test_examples: order.len(),
        init: cfg.model.init,
        unfreeze_top: classifier.unfreeze_top(),
        lora: cfg.train.lora,
        trainable_params: classifier.trainable_params(),
        train_s,
        epoch_losses,
        test: report(&gold, &predicted, &names),
        target: target_scores,
    };
    classifier.head().save(&dir.join("head.safetensors"))?;
    if backbone != Backbone::Frozen {
        model.save(&dir.join("model.safetensors"))?;
    }
    crate::io::write_atomic(&dir.join("summary.json"), &serde_json::to_string_pretty(&summary)?)?;
    Ok(summary)
}
