//! The `graft meta CONFIG.toml` configuration: `[data]` (the labelled dataset and its class
//! splits), `[episodes]`, `[backbone]` (the frozen sentence encoder), `[decoder]`, `[protonet]`,
//! `[anil]`, `[fomaml]`, `[maml]`, `[reptile]`, `[lora_protonet]`, `[lora_anil]`,
//! `[lora_fomaml]`, `[lora_maml]`, `[lora_reptile]`, `[baselines]`, `[eval]` and `[output]`. Unknown keys are errors, as everywhere.

use crate::config::{read_toml, relative_to};
use crate::datasets::appstream_classes::ClassRule;
use crate::features::head::HeadConfig;
use crate::features::Pooling;
use crate::meta::lora_maml::LoraMamlConfig;
use crate::meta::lora_protonet::{LoraLearnerConfig, LoraProtoNetConfig};
use crate::meta::{EpisodeShape, MetaTrainConfig};
use crate::models::efficientnet::LITE0_UNITS;
use crate::objectives::anil::InnerLoop;
use crate::objectives::maml::{MamlInner, MetaUpdate};
use crate::recipes::progressive::BackboneConfig;
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A meta-learning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaConfig {
    /// The labelled dataset, how classes are chosen and split.
    #[serde(default)]
    pub data: MetaData,
    /// The episode shape (N-way K-shot Q-query) and the episodes' seed.
    #[serde(default)]
    pub episodes: EpisodesSection,
    /// The frozen sentence encoder whose embeddings every learner reads (`encoder`, `device`,
    /// `dtype`, `batch_size`, `offline`; default all-minilm-l6-v2 on the CPU).
    #[serde(default)]
    pub backbone: BackboneConfig,
    /// Text only: read the texts with a decoder instead of a sentence encoder
    /// (`backbone.encoder` then names a causal LM, e.g. `smollm2-135m-instruct`): its hidden
    /// states pooled into one vector per text. Absent: a sentence encoder.
    #[serde(default)]
    pub decoder: Option<DecoderFeatures>,
    /// Prototypical-network meta-training.
    #[serde(default)]
    pub protonet: MetaTrainConfig,
    /// ANIL: its inner loop and meta-training.
    #[serde(default)]
    pub anil: AnilSection,
    /// First-order MAML: its inner loop and meta-training (off unless enabled).
    #[serde(default)]
    pub fomaml: MamlSection,
    /// MAML through finite-difference Hessian-vector products (off unless enabled).
    #[serde(default)]
    pub maml: MamlSection,
    /// Reptile (off unless enabled).
    #[serde(default)]
    pub reptile: MamlSection,
    /// A prototypical network meta-training LoRA adapters inside the decoder (off unless
    /// enabled; needs `[decoder]`).
    #[serde(default)]
    pub lora_protonet: LoraProtoNetConfig,
    /// ANIL inside the decoder: LoRA adapters and the head's start meta-trained together, the
    /// head adapting per episode as `inner` says (off unless enabled; needs `[decoder]`).
    #[serde(default)]
    pub lora_anil: LoraLearnerConfig,
    /// First-order MAML inside the decoder: its inner loop adapts the LoRA adapters and the
    /// head (off unless enabled; needs `[decoder]`).
    #[serde(default, skip_serializing_if = "LoraMamlConfig::is_default")]
    pub lora_fomaml: LoraMamlConfig,
    /// MAML inside the decoder, second order through finite-difference Hessian-vector products
    /// (off unless enabled; needs `[decoder]`).
    #[serde(default, skip_serializing_if = "LoraMamlConfig::is_default")]
    pub lora_maml: LoraMamlConfig,
    /// Reptile inside the decoder (off unless enabled; needs `[decoder]`).
    #[serde(default, skip_serializing_if = "LoraMamlConfig::is_default")]
    pub lora_reptile: LoraMamlConfig,
    /// The frozen-feature baselines.
    #[serde(default)]
    pub baselines: BaselinesSection,
    /// Meta-test evaluation.
    #[serde(default)]
    pub eval: EvalSection,
    /// Where the run writes.
    pub output: MetaOutput,
}

/// Where the examples and their classes come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaData {
    /// `appstream` (the machine's AppStream metadata: descriptions as inputs, one menu category
    /// per component as the class), `images` (the classes of `image_sets`, read by an image
    /// backbone: `backbone.encoder = "efficientnet-lite0"`) or a JSONL file of `{"text": ..., "label": ...}` lines
    /// (path relative to the config file; every distinct label is a class).
    pub source: String,
    /// AppStream files to read; empty: every `*_dep11_Components-ARCH.yml.gz` of apt's lists.
    pub appstream_files: Vec<PathBuf>,
    /// AppStream: how a component's class is chosen among its categories (`most_specific` or
    /// `first`).
    pub class_rule: ClassRule,
    /// AppStream: classes with fewer components are left out (must be at least
    /// `k_shot + q_query`; a JSONL file's classes are all kept, and one too small is an error).
    pub min_class_size: usize,
    /// Share of the classes dealt to meta-validation.
    pub val_fraction: f64,
    /// Share of the classes dealt to meta-test.
    pub test_fraction: f64,
    /// Seed of the class split (and of the draw of `images_per_class`).
    pub split_seed: u64,
    /// `images`: the image datasets whose classes are pooled (`fashion-mnist`, `mnist-5k`,
    /// `digits-8x8`; a class is named `SET:CLASS`).
    pub image_sets: Vec<String>,
    /// `images`: training images kept per class (drawn with `split_seed`).
    pub images_per_class: usize,
    /// `images`: side the images are resized to before the backbone (centre crop of the same
    /// side, ImageNet normalisation).
    pub image_size: usize,
}

impl Default for MetaData {
    /// AppStream, most specific categories with at least 20 components, 20 % / 20 % of the
    /// classes to validation / test, split seed 0.
    fn default() -> Self {
        Self {
            source: "appstream".into(),
            appstream_files: Vec::new(),
            class_rule: ClassRule::MostSpecific,
            min_class_size: 20,
            val_fraction: 0.2,
            test_fraction: 0.2,
            split_seed: 0,
            image_sets: vec!["fashion-mnist".into(), "mnist-5k".into()],
            images_per_class: 200,
            image_size: 64,
        }
    }
}

/// The episodes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpisodesSection {
    /// Classes per episode.
    pub n_way: usize,
    /// Support examples per class.
    pub k_shot: usize,
    /// Query examples per class.
    pub q_query: usize,
    /// Seed of the episodes (meta-train uses it, meta-validation `seed + 1`, meta-test `seed + 2`).
    pub seed: u64,
}

impl Default for EpisodesSection {
    /// 5-way 5-shot 15-query, seed 0.
    fn default() -> Self {
        Self { n_way: 5, k_shot: 5, q_query: 15, seed: 0 }
    }
}

impl EpisodesSection {
    /// The shape of every episode.
    pub fn shape(&self) -> EpisodeShape {
        EpisodeShape { n_way: self.n_way, k_shot: self.k_shot, q_query: self.q_query }
    }
}

/// ANIL (a linear head adapted per episode on a meta-learned projection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnilSection {
    /// Meta-train and score ANIL.
    pub enabled: bool,
    /// The inner loop: `steps` (meta-training), `eval_steps` (scoring), `lr`, `second_order`.
    pub inner: InnerLoop,
    /// Meta-training: the keys of `[protonet]` (`hidden`, `steps`, `episodes_per_step`, `lr`,
    /// `weight_decay`, `seed`, `val_episodes`, `eval_every`, `save_every`).
    pub train: MetaTrainConfig,
}

impl Default for AnilSection {
    /// On, with the default inner loop (5 steps, 10 when scoring, α = 0.5, second order) and
    /// meta-training settings.
    fn default() -> Self {
        Self { enabled: true, inner: InnerLoop::default(), train: MetaTrainConfig::default() }
    }
}

/// MAML, first-order MAML or Reptile (the projection and a linear head adapted per episode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MamlSection {
    /// Meta-train and score this learner.
    pub enabled: bool,
    /// The inner loop: `steps` (meta-training), `eval_steps` (scoring), `lr`, `adapt` (`all` or
    /// `head`), `hvp_step` (MAML's finite-difference step).
    pub inner: MamlInner,
    /// Meta-training: the keys of `[protonet]`.
    pub train: MetaTrainConfig,
}

impl Default for MamlSection {
    /// Off, with the default inner loop (5 steps, 10 when scoring, α = 0.5, everything adapted)
    /// and meta-training settings.
    fn default() -> Self {
        Self { enabled: false, inner: MamlInner::default(), train: MetaTrainConfig::default() }
    }
}

/// How a decoder's hidden states become a text's features (`[decoder]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecoderFeatures {
    /// Decoder blocks whose output is pooled (absent: all of them, after the final norm).
    pub layer: Option<usize>,
    /// `mean` over the text's tokens or the `last` token's state.
    pub pooling: Pooling,
    /// Tokens kept of each text, from its start.
    pub max_tokens: usize,
}

impl Default for DecoderFeatures {
    /// The final norm's output, mean-pooled over at most 128 tokens.
    fn default() -> Self {
        Self { layer: None, pooling: Pooling::Mean, max_tokens: 128 }
    }
}

impl DecoderFeatures {
    /// What the features depend on beyond the backbone's name, for the features file's
    /// fingerprint.
    pub fn describe(&self) -> String {
        format!("decoder layer {:?}, {:?} pooling, {} tokens", self.layer, self.pooling, self.max_tokens)
    }
}

/// The baselines, scored on the same meta-test episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselinesSection {
    /// Score the fresh linear head trained on each episode's support set (nearest centroid is
    /// always scored: it costs nothing).
    pub linear_head: bool,
    /// How that head trains (`epochs`, `batch_size`, `lr`, `weight_decay`, `seed`; `kind` is
    /// always linear).
    pub head: HeadConfig,
    /// Score the whole-backbone baseline: a copy of the backbone (the sentence encoder, the
    /// decoder's blocks under the feature layer with `[decoder]`, or the image backbone for
    /// images) with its top `fine_tune_layers` layers fine-tuned with a fresh linear head on each
    /// support set (transfer without meta-training). Costly: a fine-tuning run per episode.
    pub fine_tune: bool,
    /// Layers the whole-backbone baseline trains, from the top: encoder layers for texts,
    /// decoder blocks just below the feature layer with `[decoder]`, EfficientNet-Lite0 units
    /// (stem, 7 stages, head) for images. Absent: every one of them (all six of
    /// all-MiniLM-L6-v2, all `decoder.layer` blocks, all nine units of EfficientNet-Lite0).
    pub fine_tune_layers: Option<usize>,
    /// How it trains: the head's settings as for `head`; the layers at `lr × 0.01`.
    pub fine_tune_head: HeadConfig,
    /// Meta-test episodes it is scored on (0 = `eval.episodes`); the first ones of the same
    /// episodes every learner sees.
    pub fine_tune_episodes: usize,
}

impl Default for BaselinesSection {
    /// The linear head on: 100 epochs (a support set fits one batch, so 100 steps), AdamW at
    /// 1e-2 with weight decay 1e-2, seed 0. The whole-backbone baseline off; when on, every layer
    /// of the backbone, 20 epochs, on every meta-test episode.
    fn default() -> Self {
        Self {
            linear_head: true,
            head: HeadConfig { epochs: 100, ..HeadConfig::default() },
            fine_tune: false,
            fine_tune_layers: None,
            fine_tune_head: HeadConfig { epochs: 20, ..HeadConfig::default() },
            fine_tune_episodes: 0,
        }
    }
}

/// Meta-test evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Meta-test episodes every learner is scored on (the same episodes for all).
    pub episodes: usize,
}

impl Default for EvalSection {
    /// 600 episodes.
    fn default() -> Self {
        Self { episodes: 600 }
    }
}

/// Where the run writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaOutput {
    /// The run's folder: `summary.json`, `protonet/`, `anil/` and one folder per enabled learner
    /// of the MAML family and of the learners inside a decoder (`lora_protonet/`, `lora_anil/`,
    /// `lora_fomaml/`, `lora_maml/`, `lora_reptile/`; the meta-training runs:
    /// checkpoints, `metrics.jsonl`), and `scores/` (each learner's accuracy per episode).
    pub dir: PathBuf,
    /// Where the embeddings of the dataset are kept between runs (re-used when the encoder and
    /// the texts are the same); default `DIR/features.safetensors`.
    #[serde(default)]
    pub features: Option<PathBuf>,
}

impl MetaConfig {
    /// Reads `path` with `overrides` (`section.key=value`); a JSONL source and the AppStream
    /// files are resolved against the config's folder.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut cfg: Self = read_toml(path, overrides)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if !matches!(cfg.data.source.as_str(), "appstream" | "images") {
            cfg.data.source = relative_to(base, Path::new(&cfg.data.source)).display().to_string();
        }
        for f in &mut cfg.data.appstream_files {
            *f = relative_to(base, f);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses configs that cannot run, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GraftError::Input(m));
        self.episodes.shape().validate()?;
        let per_class = self.episodes.k_shot + self.episodes.q_query;
        if self.data.source == "appstream" && self.data.min_class_size < per_class {
            return bad(format!(
                "data.min_class_size = {} is below k_shot + q_query = {per_class}: every class needs that many examples",
                self.data.min_class_size
            ));
        }
        if self.eval.episodes == 0 {
            return bad("eval.episodes must be at least 1".into());
        }
        if self.data.source == "images" {
            if self.data.image_sets.is_empty() {
                return bad("data.image_sets is empty: name at least one image dataset".into());
            }
            if self.data.images_per_class < per_class {
                return bad(format!(
                    "data.images_per_class = {} is below k_shot + q_query = {per_class}",
                    self.data.images_per_class
                ));
            }
            if self.data.image_size < 16 {
                return bad(format!("data.image_size = {} is too small (at least 16)", self.data.image_size));
            }
            if let Some(k) = self.baselines.fine_tune_layers.filter(|&k| self.baselines.fine_tune && k > LITE0_UNITS) {
                return bad(format!(
                    "baselines.fine_tune_layers = {k}: EfficientNet-Lite0 has {LITE0_UNITS} units (stem, 7 stages, head)"
                ));
            }
            if !self.backbone.encoder.contains("efficientnet") && !Path::new(&self.backbone.encoder).is_file() {
                return bad(format!(
                    "data.source = \"images\" needs an image backbone: set backbone.encoder = \"efficientnet-lite0\" (not `{}`)",
                    self.backbone.encoder
                ));
            }
        }
        if self.backbone.batch_size == 0 {
            return bad("backbone.batch_size must be at least 1".into());
        }
        if let Some(d) = &self.decoder {
            if self.data.source == "images" {
                return bad("[decoder] reads texts; data.source = \"images\" needs an image backbone".into());
            }
            if let (Some(k), Some(layer)) = (self.baselines.fine_tune_layers, d.layer) {
                if self.baselines.fine_tune && k > layer {
                    return bad(format!(
                        "baselines.fine_tune_layers = {k}: only the decoder.layer = {layer} blocks below the feature layer can train"
                    ));
                }
            }
            if d.max_tokens == 0 {
                return bad("decoder.max_tokens must be at least 1".into());
            }
        }
        self.protonet.validate("protonet")?;
        if self.lora_protonet.inner.is_some() {
            return bad("lora_protonet has no inner loop: `inner` belongs to [lora_anil]".into());
        }
        let needs_decoder = |name: &str| match self.decoder {
            Some(_) => Ok(()),
            None => bad(format!(
                "{name} adapts a decoder: add a [decoder] section and name a causal LM in backbone.encoder"
            )),
        };
        for (name, section) in [("lora_protonet", &self.lora_protonet), ("lora_anil", &self.lora_anil)] {
            if section.enabled {
                needs_decoder(name)?;
                section.validate(name)?;
            }
        }
        for (name, section, _) in self.lora_maml_learners() {
            if section.enabled {
                needs_decoder(name)?;
                section.validate(name)?;
            }
        }
        if self.anil.enabled {
            self.anil.train.validate("anil.train")?;
            self.anil.inner.validate()?;
        }
        for (name, section, _) in self.maml_learners() {
            if section.enabled {
                section.train.validate(&format!("{name}.train"))?;
                section.inner.validate(&format!("{name}.inner"))?;
            }
        }
        if self.baselines.linear_head {
            self.baselines.head.validate()?;
        }
        if self.baselines.fine_tune {
            self.baselines.fine_tune_head.validate()?;
            if self.baselines.fine_tune_layers == Some(0) {
                return bad("baselines.fine_tune_layers must be at least 1 (0 is the linear_head baseline)".into());
            }
        }
        Ok(())
    }
}

impl MetaConfig {
    /// The MAML family in the order they are reported: learner name (also the section and the
    /// run folder), its section and its meta-update.
    pub fn maml_learners(&self) -> [(&'static str, &MamlSection, MetaUpdate); 3] {
        [
            ("fomaml", &self.fomaml, MetaUpdate::FirstOrder),
            ("maml", &self.maml, MetaUpdate::SecondOrder),
            ("reptile", &self.reptile, MetaUpdate::Reptile),
        ]
    }

    /// The MAML family inside the decoder, in the order they are reported: learner name (also
    /// the section and the run folder), its section and its meta-update.
    pub fn lora_maml_learners(&self) -> [(&'static str, &LoraMamlConfig, MetaUpdate); 3] {
        [
            ("lora_fomaml", &self.lora_fomaml, MetaUpdate::FirstOrder),
            ("lora_maml", &self.lora_maml, MetaUpdate::SecondOrder),
            ("lora_reptile", &self.lora_reptile, MetaUpdate::Reptile),
        ]
    }
}

/// Whether the TOML file at `path` is a `graft meta` config: it has an `[episodes]` table.
pub fn is_meta_config(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
    let value: toml::Value =
        toml::from_str(&text).map_err(|e| GraftError::Input(format!("{}: {e}", path.display())))?;
    Ok(value.get("episodes").is_some_and(toml::Value::is_table))
}
