//! Llama-family hyperparameters, read from GGUF metadata or a Hugging Face `config.json`.

use crate::io::gguf::{GgufError, GgufFile};
use serde::{Deserialize, Serialize};

/// Shape and numerics of a Llama-family decoder (GQA, RoPE, RMSNorm, SiLU MLP).
///
/// Field names follow Hugging Face's `LlamaConfig`, so the struct serializes to a `config.json`
/// that transformers loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Number of token embeddings (rows of the LM head).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (GQA when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Per-head width; `hidden_size / num_attention_heads` unless stated.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RoPE base θ.
    pub rope_theta: f64,
    /// RMSNorm ε.
    pub rms_norm_eps: f64,
    /// Longest supported context.
    pub max_position_embeddings: usize,
    /// Whether the LM head shares the token embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

impl LlamaConfig {
    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Reads the `llama.*` metadata of a GGUF file. `vocab_size` comes from the token table when
    /// the metadata does not state it; the head is tied when the file has no `output.weight`.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, GgufError> {
        let arch = gguf.meta_str("general.architecture")?.to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let n_heads = gguf.meta_u32(&key("attention.head_count"))? as usize;
        let hidden = gguf.meta_u32(&key("embedding_length"))? as usize;
        let vocab_size = match gguf.meta_u32(&key("vocab_size")) {
            Ok(v) => v as usize,
            Err(_) => match gguf.meta("tokenizer.ggml.tokens")? {
                candle_core::quantized::gguf_file::Value::Array(a) => a.len(),
                _ => gguf.content().tensor_infos.get("token_embd.weight").map(|t| t.shape.dims()[0]).unwrap_or(0),
            },
        };
        let head_dim = gguf.meta_u32(&key("rope.dimension_count")).map(|v| v as usize).unwrap_or(hidden / n_heads);
        Ok(Self {
            vocab_size,
            hidden_size: hidden,
            intermediate_size: gguf.meta_u32(&key("feed_forward_length"))? as usize,
            num_hidden_layers: gguf.meta_u32(&key("block_count"))? as usize,
            num_attention_heads: n_heads,
            num_key_value_heads: gguf.meta_u32(&key("attention.head_count_kv")).map(|v| v as usize).unwrap_or(n_heads),
            head_dim: Some(head_dim),
            rope_theta: gguf.meta_f32(&key("rope.freq_base")).map(f64::from).unwrap_or(10_000.0),
            rms_norm_eps: f64::from(gguf.meta_f32(&key("attention.layer_norm_rms_epsilon"))?),
            max_position_embeddings: gguf.meta_u32(&key("context_length"))? as usize,
            tie_word_embeddings: !gguf.has_tensor("output.weight"),
            bos_token_id: gguf.meta_u32("tokenizer.ggml.bos_token_id").ok(),
            eos_token_id: gguf.meta_u32("tokenizer.ggml.eos_token_id").ok(),
        })
    }

    /// Checks the shapes are consistent (heads divide the width, KV heads divide the heads).
    pub fn validate(&self) -> Result<(), String> {
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 || self.num_hidden_layers == 0 {
            return Err("head counts and layer count must be positive".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(format!(
                "{} attention heads is not a multiple of {} key/value heads",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!("head_dim {} must be even for RoPE", self.head_dim()));
        }
        Ok(())
    }
}
