//! The `graft speech train CONFIG.toml` configuration: `[model]`, `[data]`, `[adapter]`,
//! `[train]` (the same section as `graft train`'s), `[decode]` and `[output]`. Unknown keys are
//! errors, as everywhere.

use crate::adapters::lora::LoraSpec;
use crate::config::{read_toml, relative_to, TrainSection};
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A Whisper fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeechTrainConfig {
    /// The pretrained Whisper model.
    #[serde(default)]
    pub model: SpeechModel,
    /// The speech manifests.
    pub data: SpeechData,
    /// What trains.
    #[serde(default)]
    pub adapter: SpeechAdapter,
    /// Optimisation, evaluation and checkpoints (`graft train`'s `[train]`; `batch_size` counts
    /// clips).
    #[serde(default)]
    pub train: TrainSection,
    /// How the scored manifests are transcribed.
    #[serde(default)]
    pub decode: SpeechDecode,
    /// Where the run writes.
    #[serde(default)]
    pub output: crate::config::OutputSection,
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechModel {
    /// A speech-model asset (`whisper-base`, `whisper-tiny-en`) or a CTranslate2 Whisper folder
    /// (relative to the config file). Default `whisper-base`.
    pub name: String,
    /// `cpu`, `cuda` or `cuda:N`. Default `cpu`.
    pub device: String,
    /// Compute precision: `f32` or `f64`. Default `f32`.
    pub dtype: String,
    /// Never download: fail if an asset is not in the cache. Default false.
    pub offline: bool,
}

impl Default for SpeechModel {
    fn default() -> Self {
        Self { name: "whisper-base".into(), device: "cpu".into(), dtype: "f32".into(), offline: false }
    }
}

/// `[data]`: speech manifests as `graft data build speech` writes them (JSONL lines with
/// `audio`, `text` and `language`; `audio` relative to the manifest's folder). Paths are
/// relative to the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeechData {
    /// The training manifest.
    pub train: PathBuf,
    /// The held-out manifest: its loss is the run's evaluation loss, and it is transcribed and
    /// scored (WER, CER) before and after training.
    pub eval: PathBuf,
    /// More manifests transcribed and scored before and after training (held-out voices, another
    /// language to check for forgetting). Default none.
    #[serde(default)]
    pub score: Vec<PathBuf>,
    /// Keep only the clips of these language codes in `train` and `eval`. Default: every
    /// language.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Keep only the clips of these language codes in the `score` manifests (a language none of
    /// them has is an error). Default: every language.
    #[serde(default)]
    pub score_languages: Vec<String>,
    /// A folder where the encoder states of every clip are kept when the encoder is frozen
    /// (`speech::encoder_cache`), so later runs with the same model and clips skip the encoder.
    /// Default: none (states kept in memory for the run only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_cache: Option<PathBuf>,
    /// At most this many training clips per language, the first in the manifest (0 = all).
    #[serde(default)]
    pub train_limit: usize,
    /// At most this many clips per language of `eval` and of each scored manifest (0 = all).
    #[serde(default)]
    pub eval_limit: usize,
}

/// What trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpeechAdapterKind {
    /// LoRA adapters on the projections `adapter.targets` selects.
    Lora,
    /// The weights and biases of the projections `adapter.targets` selects (full fine-tuning of
    /// those projections; embeddings, convolutions and norms stay frozen).
    Full,
}

/// `[adapter]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechAdapter {
    /// `lora` or `full`. Default `lora`.
    pub kind: SpeechAdapterKind,
    /// LoRA rank. Default 16.
    pub r: usize,
    /// LoRA α (scale α/r). Default 32.
    pub alpha: f64,
    /// Dropout on the LoRA input. Default 0.
    pub dropout: f64,
    /// rsLoRA scaling α/√r. Default false.
    pub rslora: bool,
    /// Projection patterns, PEFT-style, over Hugging Face Whisper names
    /// (`decoder.layers.0.self_attn.q_proj`, `encoder.layers.3.fc1`, `…encoder_attn.v_proj`):
    /// a plain name matches as a suffix, `*` is a wildcard. A pattern that reaches the encoder
    /// makes every step run the encoder. Default `["decoder.*"]` (every decoder projection).
    pub targets: Vec<String>,
}

impl Default for SpeechAdapter {
    fn default() -> Self {
        Self {
            kind: SpeechAdapterKind::Lora,
            r: 16,
            alpha: 32.0,
            dropout: 0.0,
            rslora: false,
            targets: vec!["decoder.*".into()],
        }
    }
}

impl SpeechAdapter {
    /// The LoRA spec of this section.
    pub fn lora_spec(&self) -> LoraSpec {
        LoraSpec {
            r: self.r,
            alpha: self.alpha,
            dropout: self.dropout,
            rslora: self.rslora,
            targets: self.targets.clone(),
        }
    }
}

/// `[decode]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechDecode {
    /// Beams (1 = greedy decoding). Default 1.
    pub beam_size: usize,
    /// Most tokens generated per clip. Default 128.
    pub max_new_tokens: usize,
    /// Bootstrap resamples of the 95 % intervals. Default 1,000.
    pub resamples: usize,
}

impl Default for SpeechDecode {
    fn default() -> Self {
        Self { beam_size: 1, max_new_tokens: 128, resamples: 1000 }
    }
}

impl SpeechTrainConfig {
    /// Reads `path` with `overrides` (`section.key=value`); manifest paths and a model folder are
    /// resolved against the config's folder.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut cfg: Self = read_toml(path, overrides)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let as_dir = relative_to(base, Path::new(&cfg.model.name));
        if as_dir.is_dir() {
            cfg.model.name = as_dir.display().to_string();
        }
        cfg.data.train = relative_to(base, &cfg.data.train);
        cfg.data.eval = relative_to(base, &cfg.data.eval);
        cfg.data.score = cfg.data.score.iter().map(|p| relative_to(base, p)).collect();
        cfg.output.dir = relative_to(base, &cfg.output.dir);
        cfg.data.encoder_cache = cfg.data.encoder_cache.as_ref().map(|p| relative_to(base, p));
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses configs that cannot run, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GraftError::Input(m));
        if self.adapter.kind == SpeechAdapterKind::Lora {
            self.adapter.lora_spec().validate()?;
        }
        if self.adapter.targets.is_empty() {
            return bad("adapter.targets is empty: name the projections that train (e.g. [\"decoder.*\"])".into());
        }
        if self.train.batch_size == 0 || self.train.grad_accum == 0 {
            return bad("train.batch_size and train.grad_accum must be at least 1".into());
        }
        if !(self.train.lr.is_finite() && self.train.lr > 0.0) {
            return bad(format!("train.lr = {}: expected a positive number", self.train.lr));
        }
        if self.train.gradient_checkpointing {
            return bad("train.gradient_checkpointing is not available for Whisper".into());
        }
        if self.decode.beam_size == 0 || self.decode.max_new_tokens == 0 {
            return bad("decode.beam_size and decode.max_new_tokens must be at least 1".into());
        }
        if self.decode.resamples == 0 {
            return bad("decode.resamples must be at least 1".into());
        }
        if !matches!(self.model.dtype.as_str(), "f32" | "f64") {
            return bad(format!("model.dtype = {:?}: Whisper fine-tuning runs in f32 or f64", self.model.dtype));
        }
        Ok(())
    }

    /// Whether any pattern of `adapter.targets` selects an encoder projection among `names`.
    pub fn trains_encoder(&self, names: &[String]) -> bool {
        names
            .iter()
            .filter(|n| n.starts_with("encoder."))
            .any(|n| self.adapter.targets.iter().any(|p| crate::adapters::targets::matches(p, n)))
    }
}
