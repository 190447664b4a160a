//! The masked-LM configuration file (`graft pretrain-mlm CONFIG.toml`): the `[model]`, `[data]`,
//! `[train]` and `[output]` sections of `graft train` configs, plus `[mlm]` (how tokens are
//! masked) or `[simcse]` (contrastive training instead; `graft pretrain-simcse`). Unknown keys are errors, as everywhere.

use crate::config::{
    differing_keys, read_toml, relative_to, AdapterKind, AdapterSection, DataSection, ModelSection, OutputSection,
    TrainConfig, TrainSection,
};
use crate::data::DataFormat;
use crate::objectives::masking::MaskingSpec;
use crate::objectives::simcse::SimcseSpec;
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The encoder a masked-LM config trains when `[model]` is not given.
pub const DEFAULT_ENCODER: &str = "all-minilm-l6-v2";

/// A masked-LM run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlmConfig {
    /// The encoder (a BERT-family Hugging Face folder or asset name), device and precision.
    /// `model.init` must be `pretrained`. Default: all-minilm-l6-v2 on the CPU in f32.
    pub model: ModelSection,
    /// The corpus: `data.train` is a JSONL file of `{"text": ...}` records, a plain-text file
    /// (`.txt`: one text per paragraph) or `dataset:NAME/FILE`; `data.format` must be `text`,
    /// `data.seq_len` caps each text's tokens (special tokens included); no packing.
    pub data: DataSection,
    /// Optimisation, as for `graft train`; every encoder weight and the MLM head train.
    pub train: TrainSection,
    /// The run directory.
    pub output: OutputSection,
    /// Masking: rate, replacement shares, whole-word masking (unused with `[simcse]`).
    pub mlm: MaskingSpec,
    /// Present: train unsupervised SimCSE (temperature, dropout) instead of masked LM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simcse: Option<SimcseSpec>,
}

impl Default for MlmConfig {
    fn default() -> Self {
        Self {
            model: ModelSection { name: DEFAULT_ENCODER.into(), ..ModelSection::default() },
            data: DataSection { seq_len: 128, ..DataSection::default() },
            train: TrainSection { lr: 5e-5, batch_size: 16, ..TrainSection::default() },
            output: OutputSection::default(),
            mlm: MaskingSpec::default(),
            simcse: None,
        }
    }
}

impl MlmConfig {
    /// Reads `path`, applies `overrides` (`section.key=value`), resolves data paths against the
    /// config's folder and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let mut cfg: Self = read_toml(path, overrides)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.data.train = relative_to(base, &cfg.data.train);
        cfg.data.eval = cfg.data.eval.as_ref().map(|p| relative_to(base, p));
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value: the shared sections as `graft train` does, then what masked LM
    /// needs (text format, no packing, pretrained weights, the masking shares).
    pub fn validate(&self) -> Result<()> {
        let as_train = TrainConfig {
            model: self.model.clone(),
            adapter: AdapterSection { kind: AdapterKind::None, ..AdapterSection::default() },
            data: self.data.clone(),
            train: self.train.clone(),
            output: self.output.clone(),
        };
        as_train.validate()?;
        let bad = |key: &str, why: &str| Err(GraftError::Input(format!("config key `{key}`: {why}")));
        if self.data.format != DataFormat::Text {
            return bad("data.format", "masked-language modelling reads plain texts: use `text`");
        }
        if self.data.packing {
            return bad("data.packing", "is not supported for masked LM: each text is one sequence");
        }
        if self.model.from_run.is_some() {
            return bad("model.from_run", "is for causal-LM stages (`graft train`); give the encoder as model.name");
        }
        if self.data.replay.is_some() {
            return bad("data.replay", "is not supported for masked LM yet");
        }
        if self.model.init != crate::config::ModelInit::Pretrained {
            return bad("model.init", "masked LM adapts a pretrained encoder: use `pretrained`");
        }
        if let Some(simcse) = &self.simcse {
            if self.train.batch_size < 2 {
                return bad("train.batch_size", "SimCSE contrasts each text with the rest of its batch: use 2 or more");
            }
            simcse.validate()?;
        }
        self.mlm.validate()
    }

    /// The keys of `self` that differ from `other`, as `section.key`.
    pub fn differing_keys(&self, other: &Self) -> Vec<String> {
        differing_keys(self, other)
    }
}

/// Whether the TOML file `path` is an encoder-pretraining config (it has an `[mlm]` or a
/// `[simcse]` section).
pub fn is_mlm_config(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
    let value: toml::Value =
        toml::from_str(&text).map_err(|e| GraftError::Input(format!("{}: {e}", path.display())))?;
    Ok(["mlm", "simcse"].iter().any(|k| value.get(k).is_some_and(toml::Value::is_table)))
}
