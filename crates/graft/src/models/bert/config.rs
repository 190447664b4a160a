//! BERT-family hyperparameters, read from a Hugging Face `config.json`.

use crate::models::hparams::{
    check_json_types, Checks, HparamError, JsonKind, MAX_CONTEXT, MAX_FFN, MAX_HEADS, MAX_HIDDEN, MAX_LAYERS,
    MAX_NORM_EPS, MAX_TYPE_VOCAB, MAX_VOCAB,
};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `model_type` values whose checkpoints this implementation computes exactly.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["bert"];

/// Shape and numerics of a BERT encoder (absolute positions, post-LN blocks, GELU FFN).
///
/// Field names follow Hugging Face's `BertConfig`, so a `config.json` deserializes directly;
/// fields graft does not use (dropout rates, initializer range, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Architecture family as transformers names it (`bert`).
    pub model_type: String,
    /// Number of word-piece embeddings.
    pub vocab_size: usize,
    /// Width of the residual stream (the embedding dimension).
    pub hidden_size: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Number of encoder blocks.
    pub num_hidden_layers: usize,
    /// Number of attention heads; `hidden_size` must be a multiple of it.
    pub num_attention_heads: usize,
    /// Rows of the position-embedding table: the longest input, special tokens included.
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) embedding table.
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// LayerNorm ε (1e-12 in BERT checkpoints).
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Activation of the feed-forward layer; only the exact (erf) GELU, `gelu`, is supported.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Only `absolute` (learned position table) is supported.
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

fn default_hidden_act() -> String {
    "gelu".into()
}

fn default_position_embedding_type() -> String {
    "absolute".into()
}

/// The fields of a BERT `config.json` graft reads, with the JSON type each must have.
const JSON_FIELDS: &[(&str, JsonKind, bool)] = &[
    ("model_type", JsonKind::Text, false),
    ("vocab_size", JsonKind::Count, false),
    ("hidden_size", JsonKind::Count, false),
    ("intermediate_size", JsonKind::Count, false),
    ("num_hidden_layers", JsonKind::Count, false),
    ("num_attention_heads", JsonKind::Count, false),
    ("max_position_embeddings", JsonKind::Count, false),
    ("type_vocab_size", JsonKind::Count, false),
    ("layer_norm_eps", JsonKind::Number, false),
    ("hidden_act", JsonKind::Text, false),
    ("position_embedding_type", JsonKind::Text, false),
    ("pad_token_id", JsonKind::TokenId, true),
];

impl BertConfig {
    /// Reads and validates `config.json` of the Hugging Face folder `dir`.
    pub fn from_hf_folder(dir: &Path) -> crate::Result<Self> {
        let path = dir.join("config.json");
        let fail = |reason: String| crate::GraftError::model(&path, reason);
        let text = std::fs::read_to_string(&path).map_err(|e| crate::GraftError::io(&path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("not a BERT config: {e}")))?;
        if let Some(obj) = value.as_object() {
            check_json_types(obj, JSON_FIELDS).map_err(|e| fail(e.to_string()))?;
        }
        let cfg: Self = serde_json::from_value(value).map_err(|e| fail(format!("not a BERT config: {e}")))?;
        cfg.validate().map_err(|e| fail(e.to_string()))?;
        Ok(cfg)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks that the config describes a model this implementation computes exactly, with every
    /// size within the bounds of [`crate::models::hparams`], heads dividing the width, at least 2
    /// positions, a finite LayerNorm ε in `[f32::MIN_POSITIVE, 1]` and a padding id inside the
    /// vocabulary. Errors name the `config.json` key and the value.
    pub fn validate(&self) -> Result<(), HparamError> {
        let name = |field: &str| field.to_string();
        let c = Checks::new(&name);
        if !SUPPORTED_MODEL_TYPES.contains(&self.model_type.as_str()) {
            let reason = format!(
                "found `{}`, not a BERT encoder graft can build (supported: {SUPPORTED_MODEL_TYPES:?})",
                self.model_type
            );
            return Err(c.fail("model_type", reason));
        }
        c.count("vocab_size", self.vocab_size, 1, MAX_VOCAB)?;
        c.count("hidden_size", self.hidden_size, 1, MAX_HIDDEN)?;
        c.count("intermediate_size", self.intermediate_size, 1, MAX_FFN)?;
        c.count("num_hidden_layers", self.num_hidden_layers, 1, MAX_LAYERS)?;
        c.count("num_attention_heads", self.num_attention_heads, 1, MAX_HEADS)?;
        c.divides("num_attention_heads", self.num_attention_heads, "hidden_size", self.hidden_size)?;
        c.count("max_position_embeddings", self.max_position_embeddings, 2, MAX_CONTEXT)?;
        c.count("type_vocab_size", self.type_vocab_size, 1, MAX_TYPE_VOCAB)?;
        c.float("layer_norm_eps", self.layer_norm_eps, f64::from(f32::MIN_POSITIVE), MAX_NORM_EPS)?;
        c.token_id("pad_token_id", self.pad_token_id, "vocab_size", self.vocab_size)?;
        if self.hidden_act != "gelu" {
            let reason = format!(
                "found `{}`, not supported: graft's BERT computes the exact (erf) GELU, `gelu`",
                self.hidden_act
            );
            return Err(c.fail("hidden_act", reason));
        }
        if self.position_embedding_type != "absolute" {
            let reason = format!("found `{}`, not supported: only `absolute`", self.position_embedding_type);
            return Err(c.fail("position_embedding_type", reason));
        }
        Ok(())
    }
}
