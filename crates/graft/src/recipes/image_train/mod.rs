//! `graft vision train`: a new classification head on EfficientNet-Lite0, with the backbone
//! frozen (linear probe), its top units fine-tuned or LoRA adapters on its 1x1 convolutions
//! trained, trained on a share of a labelled image
//! dataset's labels and scored on its test images (`vision::classifier` on the one trainer).

pub mod config;

use crate::eval::classification::{report, ClassificationReport};
use crate::features::head::RunOutput;
use crate::models::efficientnet::EfficientNetLite;
use crate::report::LossPoint;
use crate::train::{Event, RunDir};
use crate::vision::classifier::{fit_image_classifier_with, ImageInput, LabelledImages};
use crate::vision::{Image, ImageSet};
use crate::{GraftError, Result};
use config::{ImageLora, ImageTrainConfig};
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
    /// Backbone units trained (0 = linear probe or LoRA).
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
}

/// The dataset's training and test images and its class names.
fn load_dataset(cfg: &ImageTrainConfig) -> Result<(ImageSet, ImageSet, Vec<String>)> {
    let offline = cfg.model.offline;
    match cfg.data.dataset.as_str() {
        "fashion-mnist" => Ok((
            crate::vision::idx::fashion_mnist("train", offline)?,
            crate::vision::idx::fashion_mnist("test", offline)?,
            crate::vision::idx::FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        )),
        "mnist-5k" => {
            let all = crate::vision::mnist_csv::mnist_5k(offline)?;
            let (mut train, mut test) = (ImageSet::default(), ImageSet::default());
            let mut seen = [0usize; 10];
            for (img, &label) in all.images.into_iter().zip(&all.labels) {
                let part = if seen[label] < 400 { &mut train } else { &mut test };
                seen[label] += 1;
                part.images.push(img);
                part.labels.push(label);
            }
            Ok((train, test, (0..10).map(|d| d.to_string()).collect()))
        }
        other => Err(GraftError::Input(format!("unknown dataset `{other}`"))),
    }
}

/// What a config's data comes to, without training: for `graft validate`.
pub fn check(cfg: &ImageTrainConfig) -> Result<(usize, usize, usize)> {
    let (train, test, classes) = load_dataset(cfg)?;
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
/// writes `summary.json`, `head.safetensors` and, when backbone units or LoRA adapters trained,
/// `model.safetensors` (LoRA merged into the weights: a plain checkpoint).
pub fn run(cfg: &ImageTrainConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<ImageTrainSummary> {
    let (train, test, classes) = load_dataset(cfg)?;
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
    let path = match std::path::Path::new(&cfg.model.name) {
        p if p.is_file() => p.to_path_buf(),
        _ => crate::assets::ensure(&cfg.model.name, cfg.model.offline)?,
    };
    let mut model = EfficientNetLite::load(&path, &device, dtype)?;
    let input = ImageInput {
        preprocess: cfg.input.preprocess(),
        augment: cfg.input.augments().then_some(cfg.head.seed),
        batch: cfg.input.batch,
    };
    let dir = &cfg.output.dir;
    let run_dir = RunDir::open(dir, resume, cfg.output.save_every)?;
    let data = LabelledImages { images: &images, labels: &labels, n_classes };
    let start = Instant::now();
    let out = RunOutput { dir: Some(run_dir), on_event: &mut *on_event };
    let (classifier, epoch_losses) =
        fit_image_classifier_with(&mut model, data, cfg.train.backbone(), &input, &cfg.head, out)?;
    let train_s = start.elapsed().as_secs_f64();

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
        unfreeze_top: cfg.train.unfreeze_top,
        lora: cfg.train.lora,
        trainable_params: classifier.trainable_params(),
        train_s,
        epoch_losses,
        test: report(&gold, &predicted, &names),
    };
    classifier.head().save(&dir.join("head.safetensors"))?;
    if cfg.train.unfreeze_top > 0 || cfg.train.lora.is_some() {
        model.save(&dir.join("model.safetensors"))?;
    }
    crate::io::write_atomic(&dir.join("summary.json"), &serde_json::to_string_pretty(&summary)?)?;
    Ok(summary)
}
