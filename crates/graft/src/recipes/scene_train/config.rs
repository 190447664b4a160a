//! The `graft vision detect` / `graft vision segment` configuration: `[model]` (as
//! `graft vision train`'s, `init` included), `[scenes]`, `[train]` and `[output]`. Unknown keys
//! are errors, as everywhere.

use crate::config::{read_toml, ModelInit};
use crate::recipes::image_train::config::{ImageModel, IMAGE_DATASETS};
use crate::vision::scenes::SceneSpec;
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A detection or segmentation run on composed scenes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneTrainConfig {
    /// The backbone: EfficientNet-Lite0, pretrained or (`init = "random"`) from scratch.
    #[serde(default)]
    pub model: ImageModel,
    /// The scenes.
    #[serde(default)]
    pub scenes: ScenesSection,
    /// What trains and how.
    #[serde(default)]
    pub train: SceneTrainSection,
    /// Where the run writes.
    pub output: SceneOutput,
}

/// Which items the scenes are made of, and how many scenes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScenesSection {
    /// The labelled items: `fashion-mnist`, `mnist-5k` or `digits-8x8` (training scenes from
    /// its training split, test scenes from its test split).
    pub dataset: String,
    /// Side of the square canvas in pixels (a multiple of 16, at least 32).
    pub canvas: usize,
    /// Fewest items a scene asks for.
    pub min_items: usize,
    /// Most items a scene asks for.
    pub max_items: usize,
    /// Largest intersection over union allowed between two items' boxes.
    pub max_overlap: f64,
    /// Training scenes.
    pub train: usize,
    /// Test scenes.
    pub test: usize,
    /// Seed of the composition (test scenes use the next seed).
    pub seed: u64,
}

impl Default for ScenesSection {
    /// 2,000 training and 500 test scenes of Fashion-MNIST items, 96 x 96, 1 to 4 items.
    fn default() -> Self {
        let SceneSpec { canvas, min_items, max_items, max_overlap } = SceneSpec::default();
        Self {
            dataset: "fashion-mnist".into(),
            canvas,
            min_items,
            max_items,
            max_overlap,
            train: 2000,
            test: 500,
            seed: 0,
        }
    }
}

impl ScenesSection {
    /// How each scene is composed.
    pub fn spec(&self) -> SceneSpec {
        SceneSpec {
            canvas: self.canvas,
            min_items: self.min_items,
            max_items: self.max_items,
            max_overlap: self.max_overlap,
        }
    }
}

/// What of the backbone trains with a pretrained model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SceneBackbone {
    /// Only the neck and head train.
    Frozen,
    /// Every backbone layer the heads read (stem to the fifth stage) trains too, at a tenth of
    /// the head's rate, batch norms frozen.
    FineTune,
}

/// The optimisation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SceneTrainSection {
    /// `frozen` or `fine-tune` (a pretrained backbone; from scratch every layer trains).
    pub backbone: SceneBackbone,
    /// Passes over the training scenes.
    pub epochs: usize,
    /// Scenes per optimizer step.
    pub batch_size: usize,
    /// AdamW learning rate of the head (constant).
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the head's weights and of the shuffling.
    pub seed: u64,
}

impl Default for SceneTrainSection {
    /// Fine-tuning, 5 epochs of 16 scenes, AdamW 1e-3 with weight decay 1e-2, seed 0.
    fn default() -> Self {
        Self { backbone: SceneBackbone::FineTune, epochs: 5, batch_size: 16, lr: 1e-3, weight_decay: 1e-2, seed: 0 }
    }
}

/// Where the run writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneOutput {
    /// The run's folder: checkpoints, `metrics.jsonl`, `summary.json`, `head.safetensors` and,
    /// when the backbone trained, `model.safetensors`.
    pub dir: PathBuf,
    /// Checkpoint every N steps (0 = only at the end).
    #[serde(default)]
    pub save_every: u64,
}

impl SceneTrainConfig {
    /// Reads `path` with `overrides`; a checkpoint file named as the model is resolved against
    /// the config's folder.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut cfg: Self = read_toml(path, overrides)?;
        cfg.model.resolve_against(path);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Whether the backbone trains (fine-tuned, or from scratch).
    pub fn backbone_trains(&self) -> bool {
        self.model.init == ModelInit::Random || self.train.backbone == SceneBackbone::FineTune
    }

    /// Refuses configs that cannot run, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GraftError::Input(m));
        let s = &self.scenes;
        if !IMAGE_DATASETS.contains(&s.dataset.as_str()) {
            return bad(format!("scenes.dataset = {:?}: expected one of {IMAGE_DATASETS:?}", s.dataset));
        }
        if s.canvas < 32 || !s.canvas.is_multiple_of(16) {
            return bad(format!("scenes.canvas = {}: expected a multiple of 16, at least 32", s.canvas));
        }
        s.spec().validate()?;
        if s.train == 0 || s.test == 0 {
            return bad("scenes.train and scenes.test must be at least 1".into());
        }
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 {
            return bad("train.epochs and train.batch_size must be at least 1".into());
        }
        if !(t.lr.is_finite() && t.lr > 0.0 && t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return bad(format!(
                "train.lr = {} and train.weight_decay = {}: expected lr > 0, decay >= 0",
                t.lr, t.weight_decay
            ));
        }
        if !matches!(self.model.dtype.as_str(), "f32" | "f64") {
            return bad(format!("model.dtype = {:?}: expected \"f32\" or \"f64\"", self.model.dtype));
        }
        Ok(())
    }
}
