//! Llama-family hyperparameters, read from GGUF metadata or a Hugging Face `config.json`.

use super::weights::WeightSource;
use crate::io::gguf::{GgufError, GgufFile};
use crate::models::hparams::{
    Checks, Dim, HparamError, MAX_CONTEXT, MAX_FFN, MAX_HEADS, MAX_HEAD_DIM, MAX_HIDDEN, MAX_LAYERS, MAX_NORM_EPS,
    MAX_VOCAB,
};
use crate::{GraftError, Result};
use candle_core::quantized::gguf_file::Value;
use serde::{Deserialize, Serialize};

/// Shape and numerics of a Llama-family decoder (GQA, RoPE, RMSNorm, gated MLP).
///
/// Field names follow Hugging Face's `LlamaConfig`, so the struct serializes to a `config.json`
/// that transformers loads. [`LlamaConfig::family`] selects the variant of the decoder (Llama or
/// Gemma 3), which only GGUF files state; `config.json` folders are read as Llama.
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
    /// Which decoder variant these hyperparameters belong to (read from GGUF
    /// `general.architecture`; not part of a Llama `config.json`).
    #[serde(skip)]
    pub family: Family,
}

/// The decoder variants graft builds from one implementation. They share the block skeleton
/// (RMSNorm, GQA attention with half-rotation RoPE, gated MLP, KV cache, training ops) and differ
/// in the pieces named here.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Family {
    /// Llama / SmolLM2: two pre-norms per block, SiLU-gated MLP, one RoPE base, attention scale
    /// `1/√head_dim`; GGUF files store q/k rows permuted for interleaved RoPE.
    #[default]
    Llama,
    /// Gemma 3 text decoders (GGUF architecture `gemma3`): four norms per block (after attention
    /// and after the MLP too) plus q/k norms over each head before RoPE, GELU (tanh)-gated MLP,
    /// embeddings scaled by `√hidden_size`, sliding-window attention with its own RoPE base in
    /// all but every `global_every`-th layer. Norm vectors are held as the multiplier `1 + w`
    /// (as GGUF stores them), q/k rows in the original order.
    Gemma3(Gemma3Params),
}

/// The Gemma 3 hyperparameters beyond the Llama ones. GGUF states only `sliding_window`; the
/// others are transformers' `Gemma3TextConfig` defaults, which released checkpoints use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemma3Params {
    /// Keys a sliding-window layer's query at position `q` sees: `q - sliding_window < k <= q`.
    pub sliding_window: usize,
    /// RoPE base θ of the sliding-window layers (the global ones use `rope_theta`).
    pub rope_local_theta: f64,
    /// Every `global_every`-th layer (1-based) attends to the whole context.
    pub global_every: usize,
    /// Attention scores are scaled by `query_pre_attn_scalar^-½`.
    pub query_pre_attn_scalar: f64,
}

/// The `general.architecture` of Gemma 3 GGUF files.
pub const GEMMA3_ARCH: &str = "gemma3";

impl Gemma3Params {
    /// Gemma 3's defaults around a sliding window of `sliding_window` positions, for a head
    /// width of `head_dim`.
    pub fn with_window(sliding_window: usize, head_dim: usize) -> Self {
        Self { sliding_window, rope_local_theta: 10_000.0, global_every: 6, query_pre_attn_scalar: head_dim as f64 }
    }
}

/// Position of a norm within a block's norm list ([`LlamaConfig::norm_modules`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormRole {
    /// Before attention.
    AttnIn = 0,
    /// Before the MLP.
    FfnIn = 1,
    /// On the attention output, before the residual add (Gemma 3).
    AttnOut = 2,
    /// On the MLP output, before the residual add (Gemma 3).
    FfnOut = 3,
    /// On each query head before RoPE (Gemma 3).
    Q = 4,
    /// On each key head before RoPE (Gemma 3).
    K = 5,
}

/// The activation of the gated MLP: `down(act(gate(h)) * up(h))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x · σ(x)` (Llama).
    Silu,
    /// GELU, tanh approximation (Gemma).
    GeluTanh,
}

/// GGUF metadata keys of the hyperparameters, by `config.json` field name; the key is prefixed
/// with the architecture (`llama.`) unless it is a tokenizer key.
const GGUF_KEYS: [(&str, &str); 13] = [
    ("vocab_size", "vocab_size"),
    ("hidden_size", "embedding_length"),
    ("intermediate_size", "feed_forward_length"),
    ("num_hidden_layers", "block_count"),
    ("num_attention_heads", "attention.head_count"),
    ("num_key_value_heads", "attention.head_count_kv"),
    ("head_dim", "rope.dimension_count"),
    ("rope_theta", "rope.freq_base"),
    ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
    ("max_position_embeddings", "context_length"),
    ("bos_token_id", "tokenizer.ggml.bos_token_id"),
    ("eos_token_id", "tokenizer.ggml.eos_token_id"),
    ("sliding_window", "attention.sliding_window"),
];

/// How a model file spells the hyperparameters, so errors name the key the user can find in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyNames {
    /// As `config.json` fields (`num_attention_heads`).
    ConfigJson,
    /// As GGUF metadata keys of architecture `arch` (`llama.attention.head_count`).
    Gguf {
        /// `general.architecture`.
        arch: String,
    },
}

impl KeyNames {
    /// The key of the `config.json` field `field` in this spelling.
    pub fn name(&self, field: &str) -> String {
        match self {
            KeyNames::ConfigJson => field.to_string(),
            // Gemma 3 states the head width as the key length (there is no rope.dimension_count).
            KeyNames::Gguf { arch } if arch == GEMMA3_ARCH && field == "head_dim" => {
                format!("{arch}.attention.key_length")
            }
            KeyNames::Gguf { arch } => match GGUF_KEYS.iter().find(|(f, _)| *f == field) {
                Some((_, k)) if k.starts_with("tokenizer.") => (*k).to_string(),
                Some((_, k)) => format!("{arch}.{k}"),
                None => field.to_string(),
            },
        }
    }
}

impl LlamaConfig {
    /// Per-head width: `head_dim`, else `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The Gemma 3 hyperparameters, for a Gemma 3 config.
    pub fn gemma3(&self) -> Option<&Gemma3Params> {
        match &self.family {
            Family::Gemma3(p) => Some(p),
            Family::Llama => None,
        }
    }

    /// The sliding window of layer `layer`, `None` for a layer that sees the whole context.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        let g = self.gemma3()?;
        (!(layer + 1).is_multiple_of(g.global_every.max(1))).then_some(g.sliding_window)
    }

    /// The RoPE base θ of layer `layer`.
    pub fn layer_rope_theta(&self, layer: usize) -> f64 {
        match (self.gemma3(), self.layer_window(layer)) {
            (Some(g), Some(_)) => g.rope_local_theta,
            _ => self.rope_theta,
        }
    }

    /// The factor attention scores are scaled by before the softmax.
    pub fn attention_scale(&self) -> f64 {
        match self.gemma3() {
            Some(g) => 1.0 / g.query_pre_attn_scalar.sqrt(),
            None => 1.0 / (self.head_dim() as f64).sqrt(),
        }
    }

    /// The factor token embeddings are multiplied by on lookup (`√hidden_size` for Gemma 3, as
    /// the model's float type rounds it: transformers keeps it in the model dtype), or `None`.
    pub fn embedding_scale(&self, dtype: candle_core::DType) -> Option<f64> {
        self.gemma3()?;
        Some(match dtype {
            candle_core::DType::F64 => (self.hidden_size as f64).sqrt(),
            _ => f64::from((self.hidden_size as f32).sqrt()),
        })
    }

    /// The MLP activation.
    pub fn activation(&self) -> Activation {
        match self.family {
            Family::Llama => Activation::Silu,
            Family::Gemma3(_) => Activation::GeluTanh,
        }
    }

    /// The Hugging Face module names (under `model.layers.{i}.`) of a block's norm vectors,
    /// indexed by [`NormRole`].
    pub fn norm_modules(&self) -> &'static [&'static str] {
        match self.family {
            Family::Llama => &["input_layernorm", "post_attention_layernorm"],
            Family::Gemma3(_) => &[
                "input_layernorm",
                "pre_feedforward_layernorm",
                "post_attention_layernorm",
                "post_feedforward_layernorm",
                "self_attn.q_norm",
                "self_attn.k_norm",
            ],
        }
    }

    /// Refuses what graft cannot write for this variant yet (`what`: "a GGUF export", ...):
    /// the writers know the Llama layout only.
    pub fn require_llama(&self, what: &str) -> Result<()> {
        match self.family {
            Family::Llama => Ok(()),
            Family::Gemma3(_) => Err(GraftError::Input(format!(
                "{what} of a Gemma 3 model is not supported yet (graft writes the Llama layout only); \
                 train a LoRA adapter and export it in PEFT format (`--format peft`)"
            ))),
        }
    }

    /// Reads the `llama.*` metadata of a GGUF file and validates it ([`LlamaConfig::validate_as`];
    /// errors name the GGUF key). `vocab_size` comes from the token table when the metadata does
    /// not state it; the head is tied when the file has no `output.weight`. Optional keys
    /// (`vocab_size`, `attention.head_count_kv`, `rope.dimension_count`, `rope.freq_base`, the
    /// BOS/EOS ids) may be absent, but a value of the wrong type is an error.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, GgufError> {
        let arch = gguf.meta_str("general.architecture")?.to_string();
        let names = KeyNames::Gguf { arch: arch.clone() };
        let key = |field: &str| names.name(field);
        let count = |field: &str| gguf.meta_u32(&key(field)).map(|v| v as usize);
        let optional = |field: &str| gguf.meta_u32_opt(&key(field));
        let n_heads = count("num_attention_heads")?;
        let hidden = count("hidden_size")?;
        let vocab_size = match optional("vocab_size")? {
            Some(v) => v as usize,
            None => match gguf.metadata().get("tokenizer.ggml.tokens") {
                Some(Value::Array(tokens)) => tokens.len(),
                _ => gguf.header().tensor("token_embd.weight").map_or(0, |t| t.dims[0]),
            },
        };
        let head_dim = optional("head_dim")?.map_or(hidden / n_heads.max(1), |v| v as usize);
        let family = if arch == GEMMA3_ARCH {
            Family::Gemma3(Gemma3Params::with_window(count("sliding_window")?, head_dim))
        } else {
            Family::Llama
        };
        let cfg = Self {
            vocab_size,
            hidden_size: hidden,
            intermediate_size: count("intermediate_size")?,
            num_hidden_layers: count("num_hidden_layers")?,
            num_attention_heads: n_heads,
            num_key_value_heads: optional("num_key_value_heads")?.map_or(n_heads, |v| v as usize),
            head_dim: Some(head_dim),
            rope_theta: gguf.meta_f32_opt(&key("rope_theta"))?.map_or(10_000.0, f64::from),
            rms_norm_eps: f64::from(gguf.meta_f32(&key("rms_norm_eps"))?),
            max_position_embeddings: count("max_position_embeddings")?,
            tie_word_embeddings: !gguf.has_tensor("output.weight"),
            bos_token_id: optional("bos_token_id")?,
            eos_token_id: optional("eos_token_id")?,
            family,
        };
        cfg.validate_as(&names).map_err(|e| GgufError::Metadata {
            path: gguf.path().to_path_buf(),
            key: e.key,
            reason: e.reason,
        })?;
        Ok(cfg)
    }

    /// [`LlamaConfig::validate_as`] with `config.json` key names.
    pub fn validate(&self) -> Result<(), HparamError> {
        self.validate_as(&KeyNames::ConfigJson)
    }

    /// Checks every hyperparameter before anything is built from it: sizes within the bounds of
    /// [`crate::models::hparams`], KV heads dividing the query heads, an even head width, a
    /// finite RoPE base ≥ 1 and RMSNorm ε in `[f32::MIN_POSITIVE, 1]`, BOS/EOS ids inside the
    /// vocabulary. Errors name the key as `names` spells it, and the value.
    pub fn validate_as(&self, names: &KeyNames) -> Result<(), HparamError> {
        let name = |field: &str| names.name(field);
        let c = Checks::new(&name);
        c.count("vocab_size", self.vocab_size, 1, MAX_VOCAB)?;
        c.count("hidden_size", self.hidden_size, 1, MAX_HIDDEN)?;
        c.count("intermediate_size", self.intermediate_size, 1, MAX_FFN)?;
        c.count("num_hidden_layers", self.num_hidden_layers, 1, MAX_LAYERS)?;
        c.count("num_attention_heads", self.num_attention_heads, 1, MAX_HEADS)?;
        c.count("num_key_value_heads", self.num_key_value_heads, 1, MAX_HEADS)?;
        c.divides("num_key_value_heads", self.num_key_value_heads, "num_attention_heads", self.num_attention_heads)?;
        // Without `head_dim` the width is derived from `hidden_size`, so that is the key at fault.
        let hd_field = if self.head_dim.is_some() { "head_dim" } else { "hidden_size" };
        let hd = self.head_dim();
        c.count(hd_field, hd, 2, MAX_HEAD_DIM)?;
        if !hd.is_multiple_of(2) {
            return Err(c.fail(hd_field, format!("head width {hd} must be even (RoPE rotates pairs)")));
        }
        c.float("rope_theta", self.rope_theta, 1.0, f64::MAX)?;
        c.float("rms_norm_eps", self.rms_norm_eps, f64::from(f32::MIN_POSITIVE), MAX_NORM_EPS)?;
        c.count("max_position_embeddings", self.max_position_embeddings, 1, MAX_CONTEXT)?;
        c.token_id("bos_token_id", self.bos_token_id, "vocab_size", self.vocab_size)?;
        c.token_id("eos_token_id", self.eos_token_id, "vocab_size", self.vocab_size)?;
        if let Some(g) = self.gemma3() {
            c.count("sliding_window", g.sliding_window, 1, MAX_CONTEXT)?;
            c.count("sliding_window_pattern", g.global_every, 1, MAX_LAYERS)?;
            c.float("rope_local_base_freq", g.rope_local_theta, 1.0, f64::MAX)?;
            c.float("query_pre_attn_scalar", g.query_pre_attn_scalar, 1.0, f64::MAX)?;
        }
        Ok(())
    }

    /// Checks that `source` holds exactly the tensors this config describes, with the shapes it
    /// implies, by reading only their shapes: the embedding `[vocab, hidden]`, `num_hidden_layers`
    /// blocks (no fewer, no more) and their projections and norms, the final norm, an untied LM
    /// head. Run it after [`LlamaConfig::validate_as`] (the shapes are products of bounded
    /// values); errors name the tensor, both shapes and the keys behind the expected one.
    pub fn check_tensors(&self, source: &dyn WeightSource) -> Result<()> {
        let names = source.key_names();
        let name = |field: &str| names.name(field);
        let c = Checks::new(&name);
        let fail = |reason: String| GraftError::model(source.origin(), reason);
        let shape = |hf: &str, dims: &[Dim<'_>]| {
            c.shape(&source.stored_name(hf), source.shape(hf).as_deref(), dims).map_err(fail)
        };
        let vocab = [("vocab_size", self.vocab_size)];
        let hidden = [("hidden_size", self.hidden_size)];
        let q_rows = [("num_attention_heads", self.num_attention_heads), ("head_dim", self.head_dim())];
        let kv_rows = [("num_key_value_heads", self.num_key_value_heads), ("head_dim", self.head_dim())];
        let ffn = [("intermediate_size", self.intermediate_size)];
        shape("model.embed_tokens.weight", &[Dim(&vocab), Dim(&hidden)])?;
        let n = self.num_hidden_layers;
        let block_probe = |i: usize| format!("model.layers.{i}.input_layernorm.weight");
        if !source.contains(&block_probe(n - 1)) {
            let reason = format!(
                "found {n}, but the file has no block {} (no `{}`)",
                n - 1,
                source.stored_name(&block_probe(n - 1))
            );
            return Err(fail(c.fail("num_hidden_layers", reason).to_string()));
        }
        if source.contains(&block_probe(n)) {
            let reason =
                format!("found {n}, but the file has more blocks (`{}` exists)", source.stored_name(&block_probe(n)));
            return Err(fail(c.fail("num_hidden_layers", reason).to_string()));
        }
        let head = [("head_dim", self.head_dim())];
        for i in 0..n {
            let t = |m: &str| format!("model.layers.{i}.{m}.weight");
            for m in self.norm_modules() {
                let width = if m.starts_with("self_attn.") { &head } else { &hidden };
                shape(&t(m), &[Dim(width)])?;
            }
            shape(&t("self_attn.q_proj"), &[Dim(&q_rows), Dim(&hidden)])?;
            shape(&t("self_attn.k_proj"), &[Dim(&kv_rows), Dim(&hidden)])?;
            shape(&t("self_attn.v_proj"), &[Dim(&kv_rows), Dim(&hidden)])?;
            shape(&t("self_attn.o_proj"), &[Dim(&hidden), Dim(&q_rows)])?;
            shape(&t("mlp.gate_proj"), &[Dim(&ffn), Dim(&hidden)])?;
            shape(&t("mlp.up_proj"), &[Dim(&ffn), Dim(&hidden)])?;
            shape(&t("mlp.down_proj"), &[Dim(&hidden), Dim(&ffn)])?;
        }
        shape("model.norm.weight", &[Dim(&hidden)])?;
        if self.has_lm_head(source) {
            shape("lm_head.weight", &[Dim(&vocab), Dim(&hidden)])?;
        }
        Ok(())
    }

    /// Whether the model has an LM head of its own in `source` (else it is the embedding).
    pub fn has_lm_head(&self, source: &dyn WeightSource) -> bool {
        !self.tie_word_embeddings && source.contains("lm_head.weight")
    }
}
