//! The `graft vision train CONFIG.toml` configuration: `[model]`, `[data]`, `[input]`,
//! `[train]`, `[head]` and `[output]`. Unknown keys are errors, as everywhere.

use crate::config::{read_toml, relative_to, ModelInit};
use crate::features::head::HeadConfig;
use crate::models::efficientnet::LITE0_UNITS;
use crate::vision::classifier::Backbone;
use crate::vision::preprocess::Preprocess;
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// An image-classification fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTrainConfig {
    /// The pretrained backbone.
    #[serde(default)]
    pub model: ImageModel,
    /// The labelled images.
    #[serde(default)]
    pub data: ImageData,
    /// How images become inputs.
    #[serde(default)]
    pub input: InputSection,
    /// What trains besides the head.
    #[serde(default)]
    pub train: ImageTrainSection,
    /// The new head and its optimisation: `kind` (`{ type = "linear" }` or `{ type = "mlp",
    /// hidden = N }`), `epochs`, `batch_size`, `lr` (AdamW, constant; the backbone's units train
    /// at `lr × 0.01`), `weight_decay`, `seed`.
    #[serde(default)]
    pub head: HeadConfig,
    /// Domain adaptation to an unlabelled target dataset (optional).
    #[serde(default)]
    pub adapt: Option<AdaptSection>,
    /// Where the run writes.
    pub output: ImageOutput,
}

/// The image datasets `data.dataset` and `adapt.target` name.
pub const IMAGE_DATASETS: [&str; 3] = ["fashion-mnist", "mnist-5k", "digits-8x8"];

/// How the features are aligned to the target domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdaptMethod {
    /// Deep CORAL.
    Coral,
    /// Multi-kernel MMD (DAN's five kernels).
    Mmd,
    /// A domain classifier on gradient-reversed features.
    Dann,
}

/// Domain adaptation: the labelled `data.dataset` is the source, `target`'s training images
/// (their labels unused) the target; the target's test images are scored too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptSection {
    /// `coral`, `mmd` or `dann`.
    pub method: AdaptMethod,
    /// The target dataset (one of `data.dataset`'s names).
    pub target: String,
    /// Weight of the alignment loss against the source cross-entropy.
    #[serde(default = "one")]
    pub weight: f64,
    /// Unlabelled target training images used (a seeded draw; 0 = all).
    #[serde(default)]
    pub target_limit: usize,
    /// DANN: hidden units of the domain classifier.
    #[serde(default = "dann_hidden")]
    pub dann_hidden: usize,
    /// DANN: steepness γ of the reversal-strength schedule.
    #[serde(default = "dann_gamma")]
    pub dann_gamma: f64,
}

fn one() -> f64 {
    1.0
}

fn dann_hidden() -> usize {
    256
}

fn dann_gamma() -> f64 {
    10.0
}

/// The backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageModel {
    /// The asset `efficientnet-lite0` or a checkpoint file with its tensor names (legacy or zip
    /// `torch.save`, or safetensors; relative to the config's folder).
    pub name: String,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `f32` or `f64`.
    pub dtype: String,
    /// Never download: fail if an asset is not in the cache.
    pub offline: bool,
    /// `pretrained` (the weights of `name`) or `random`: the same architecture with random
    /// weights, every layer trained with batch statistics (the from-scratch baseline; `name`
    /// is not read).
    pub init: ModelInit,
}

impl ImageModel {
    /// Makes `name`, when it is a checkpoint file relative to the folder of the config at
    /// `config_path`, a path that works from anywhere.
    pub fn resolve_against(&mut self, config_path: &Path) {
        let base = config_path.parent().unwrap_or(Path::new("."));
        let as_file = relative_to(base, Path::new(&self.name));
        if as_file.is_file() {
            self.name = as_file.display().to_string();
        }
    }
}

impl Default for ImageModel {
    /// Pretrained EfficientNet-Lite0 in f32 on the CPU.
    fn default() -> Self {
        Self {
            name: "efficientnet-lite0".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            offline: false,
            init: ModelInit::Pretrained,
        }
    }
}

/// The dataset and how much of it is used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageData {
    /// `fashion-mnist` (60,000 training / 10,000 test images, 10 classes) or `mnist-5k`
    /// (5,000 digits: per class the first 400 train, the last 100 test).
    pub dataset: String,
    /// Share of each class's training images that carry labels (at least one per class), drawn
    /// with `seed`: the label-efficiency axis.
    pub label_fraction: f64,
    /// Score on this many test images (a seeded draw; 0 = all of them).
    pub eval_limit: usize,
    /// Seed of the labelled subset and of the test draw.
    pub seed: u64,
}

impl Default for ImageData {
    /// Fashion-MNIST, every label, the whole test split, seed 0.
    fn default() -> Self {
        Self { dataset: "fashion-mnist".into(), label_fraction: 1.0, eval_limit: 0, seed: 0 }
    }
}

/// Image preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputSection {
    /// Side the images are resized to (bilinear).
    pub resize: usize,
    /// Side of the crop the model sees (centred; random when `random_crop` and training).
    pub crop: usize,
    /// Training augmentation: random crop position.
    pub random_crop: bool,
    /// Training augmentation: left-right flip with probability 1/2.
    pub hflip: bool,
    /// Images per backbone pass when computing features without gradients.
    pub batch: usize,
}

impl Default for InputSection {
    /// 64 x 64, no augmentation, 64 images per pass.
    fn default() -> Self {
        Self { resize: 64, crop: 64, random_crop: false, hflip: false, batch: 64 }
    }
}

impl InputSection {
    /// The preprocessing (ImageNet normalisation).
    pub fn preprocess(&self) -> Preprocess {
        Preprocess {
            resize: self.resize,
            crop: self.crop,
            random_crop: self.random_crop,
            hflip: self.hflip,
            ..Preprocess::imagenet(self.crop)
        }
    }

    /// Whether training augments.
    pub fn augments(&self) -> bool {
        self.random_crop || self.hflip
    }
}

/// What trains besides the head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageTrainSection {
    /// Top units of the backbone trained with the head: 0 = linear probe on frozen features,
    /// 1 = the head convolution, 2-8 = also that many stages from the top, 9 = every layer.
    pub unfreeze_top: usize,
    /// LoRA adapters on every 1x1 convolution trained with the head, base weights frozen
    /// (`{ r = 8, alpha = 16.0 }`); not with `unfreeze_top > 0`.
    pub lora: Option<ImageLora>,
}

impl Default for ImageTrainSection {
    /// A linear probe.
    fn default() -> Self {
        Self { unfreeze_top: 0, lora: None }
    }
}

impl ImageTrainSection {
    /// What of the backbone trains, for a backbone initialised as `init`.
    pub fn backbone(&self, init: ModelInit) -> Backbone {
        if init == ModelInit::Random {
            return Backbone::Scratch;
        }
        match self.lora {
            Some(ImageLora { r, alpha }) => Backbone::Lora { r, alpha },
            None => Backbone::top_units(self.unfreeze_top),
        }
    }
}

/// LoRA on the backbone's 1x1 convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageLora {
    /// Rank of each update (at least 1).
    pub r: usize,
    /// Scaling numerator: the update is `alpha / r · B A`.
    pub alpha: f64,
}

/// Where the run writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageOutput {
    /// The run's folder: checkpoints, `metrics.jsonl`, `summary.json`, `head.safetensors` and,
    /// when backbone units or LoRA adapters trained, `model.safetensors` (LoRA merged in).
    pub dir: PathBuf,
    /// Checkpoint every N steps (0 = only at the end).
    #[serde(default)]
    pub save_every: u64,
}

/// Whether the config at `path` is an image-training config (it has an `[input]` table).
pub fn is_image_train_config(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
    let value: toml::Value =
        toml::from_str(&text).map_err(|e| GraftError::Input(format!("{}: {e}", path.display())))?;
    Ok(value.get("input").is_some_and(toml::Value::is_table))
}

impl ImageTrainConfig {
    /// Reads `path` with `overrides` (`section.key=value`); a checkpoint file named as the model
    /// is resolved against the config's folder.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut cfg: Self = read_toml(path, overrides)?;
        cfg.model.resolve_against(path);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses configs that cannot run, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GraftError::Input(m));
        if !IMAGE_DATASETS.contains(&self.data.dataset.as_str()) {
            return bad(format!("data.dataset = {:?}: expected one of {IMAGE_DATASETS:?}", self.data.dataset));
        }
        if let Some(a) = &self.adapt {
            if !IMAGE_DATASETS.contains(&a.target.as_str()) {
                return bad(format!("adapt.target = {:?}: expected one of {IMAGE_DATASETS:?}", a.target));
            }
            if !(a.weight.is_finite() && a.weight >= 0.0) {
                return bad(format!("adapt.weight = {}: expected 0 or more", a.weight));
            }
            if self.train.backbone(self.model.init) == Backbone::Frozen {
                return bad(
                    "[adapt] needs a trained backbone: set train.unfreeze_top or train.lora (or model.init = \"random\")"
                        .into(),
                );
            }
            if a.method == AdaptMethod::Dann && a.dann_hidden == 0 {
                return bad("adapt.dann_hidden must be at least 1".into());
            }
        }
        let f = self.data.label_fraction;
        if !(f.is_finite() && f > 0.0 && f <= 1.0) {
            return bad(format!("data.label_fraction = {f}: expected a share above 0 and at most 1"));
        }
        if self.train.unfreeze_top > LITE0_UNITS {
            return bad(format!(
                "train.unfreeze_top = {}: EfficientNet-Lite0 has {LITE0_UNITS} units (stem, 7 stages, head)",
                self.train.unfreeze_top
            ));
        }
        if self.model.init == ModelInit::Random && (self.train.unfreeze_top > 0 || self.train.lora.is_some()) {
            return bad("model.init = \"random\" trains every layer: remove train.unfreeze_top and train.lora".into());
        }
        if let Some(ImageLora { r, alpha }) = self.train.lora {
            if self.train.unfreeze_top > 0 {
                return bad(format!(
                    "train.lora and train.unfreeze_top = {} cannot be combined: LoRA trains adapters on a frozen \
                     backbone; set train.unfreeze_top = 0 or remove train.lora",
                    self.train.unfreeze_top
                ));
            }
            if r == 0 {
                return bad("train.lora.r = 0: the rank must be at least 1".into());
            }
            if !(alpha.is_finite() && alpha > 0.0) {
                return bad(format!("train.lora.alpha = {alpha}: expected a positive number"));
            }
        }
        if self.input.batch == 0 {
            return bad("input.batch must be at least 1".into());
        }
        if self.input.crop < 32 {
            return bad(format!("input.crop = {}: EfficientNet-Lite0 needs at least 32 pixels", self.input.crop));
        }
        self.input.preprocess().validate()?;
        self.head.validate()
    }
}
