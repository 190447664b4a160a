//! BERT-family hyperparameters, read from a Hugging Face `config.json`.

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

impl BertConfig {
    /// Reads and validates `config.json` of the Hugging Face folder `dir`.
    pub fn from_hf_folder(dir: &Path) -> crate::Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| crate::GraftError::io(&path, e))?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|e| crate::GraftError::model(&path, format!("not a BERT config: {e}")))?;
        cfg.validate().map_err(|r| crate::GraftError::model(&path, r))?;
        Ok(cfg)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks that the config describes a model this implementation computes exactly.
    pub fn validate(&self) -> Result<(), String> {
        if !SUPPORTED_MODEL_TYPES.contains(&self.model_type.as_str()) {
            return Err(format!(
                "model_type `{}` is not a BERT encoder graft can build (supported: {SUPPORTED_MODEL_TYPES:?})",
                self.model_type
            ));
        }
        if self.num_attention_heads == 0 || self.num_hidden_layers == 0 || self.hidden_size == 0 {
            return Err("hidden_size, num_attention_heads and num_hidden_layers must be positive".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act `{}` is not supported: graft's BERT computes the exact (erf) GELU, `gelu`",
                self.hidden_act
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type `{}` is not supported: only `absolute`",
                self.position_embedding_type
            ));
        }
        if self.type_vocab_size == 0 || self.max_position_embeddings < 2 {
            return Err("type_vocab_size must be positive and max_position_embeddings at least 2".into());
        }
        Ok(())
    }
}
