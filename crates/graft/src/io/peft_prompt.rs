//! PEFT's prompt-learning adapter format (`PROMPT_TUNING`, `PREFIX_TUNING`):
//! `adapter_config.json` + `adapter_model.safetensors` holding one tensor, `prompt_embeddings`.
//!
//! A soft prompt is stored `[n, hidden]`. A prefix is stored `[n, layers · 2 · token_dim]` with
//! `token_dim = kv_heads · head_dim` (PEFT sizes prefixes of grouped-query models by their KV
//! heads and records `num_attention_heads = kv_heads`); PEFT views it as
//! `[batch, n, layers · 2, kv_heads, head_dim]`, so entry `2l` is layer `l`'s keys and `2l + 1`
//! its values — the layout graft trains in, so nothing is reshuffled.

use crate::adapters::prompt::{self, PromptAdapter, PromptInit, PromptKind, PromptSpec, PROMPT_EMBEDDINGS};
use crate::models::llama::{Llama, VirtualTokens};
use crate::models::Model;
use crate::{GraftError, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The fields of PEFT's prompt-learning `adapter_config.json` graft writes and reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeftPromptConfig {
    /// `PROMPT_TUNING` or `PREFIX_TUNING`.
    pub peft_type: String,
    /// `CAUSAL_LM` for decoder models.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Number of virtual tokens `n`.
    pub num_virtual_tokens: usize,
    /// Width of one virtual token: the hidden size (prompt tuning) or `kv_heads · head_dim`
    /// (prefix tuning).
    pub token_dim: usize,
    /// 1 for decoder-only models.
    #[serde(default = "one")]
    pub num_transformer_submodules: usize,
    /// Attention heads (KV heads for prefix tuning).
    pub num_attention_heads: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// How the soft prompt was initialised (`TEXT`, `SAMPLE_VOCAB`, `RANDOM`); prompt tuning only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tuning_init: Option<String>,
    /// The init text for `TEXT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tuning_init_text: Option<String>,
    /// Tokenizer of the init text (the base model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_name_or_path: Option<String>,
    /// Prefix tuning: whether an MLP produces the prefix (graft writes and reads `false` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_projection: Option<bool>,
    /// Prefix tuning: hidden size of that MLP (equal to `token_dim` when unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_hidden_size: Option<usize>,
    /// The base model the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// PEFT's flag for a frozen adapter.
    #[serde(default)]
    pub inference_mode: bool,
}

fn one() -> usize {
    1
}

/// The config PEFT would write for `adapter` on `model`.
pub fn peft_config(adapter: &PromptAdapter, model: &Llama, base_model: &str) -> PeftPromptConfig {
    let cfg = model.config();
    let prefix = adapter.spec.kind == PromptKind::PrefixTuning;
    let (token_dim, heads) = if prefix {
        (cfg.num_key_value_heads * cfg.head_dim(), cfg.num_key_value_heads)
    } else {
        (cfg.hidden_size, cfg.num_attention_heads)
    };
    let text = match &adapter.spec.init {
        PromptInit::Text(t) => Some(t.clone()),
        PromptInit::Random => None,
    };
    PeftPromptConfig {
        peft_type: adapter.spec.kind.peft_type().into(),
        task_type: Some("CAUSAL_LM".into()),
        num_virtual_tokens: adapter.spec.num_virtual_tokens,
        token_dim,
        num_transformer_submodules: 1,
        num_attention_heads: heads,
        num_layers: cfg.num_hidden_layers,
        prompt_tuning_init: (!prefix).then(|| adapter.spec.peft_init().to_string()),
        tokenizer_name_or_path: text.as_ref().map(|_| base_model.to_string()),
        prompt_tuning_init_text: text,
        prefix_projection: prefix.then_some(false),
        encoder_hidden_size: prefix.then_some(token_dim),
        base_model_name_or_path: Some(base_model.into()),
        inference_mode: true,
    }
}

/// Writes `adapter` (set on `model`) as a PEFT adapter folder at `dir`, atomically.
pub fn save_prompt(adapter: &PromptAdapter, model: &Llama, dir: &Path, base_model: &str) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| GraftError::io(parent, e))?;
    let tmp =
        tempfile::Builder::new().prefix(".graft-adapter-").tempdir_in(parent).map_err(|e| GraftError::io(parent, e))?;
    let path = tmp.path().join("adapter_config.json");
    let cfg = peft_config(adapter, model, base_model);
    std::fs::write(&path, serde_json::to_string_pretty(&cfg)?).map_err(|e| GraftError::io(&path, e))?;
    let tensors =
        HashMap::from([(PROMPT_EMBEDDINGS.to_string(), adapter.var.as_tensor().to_dtype(DType::F32)?.contiguous()?)]);
    candle_core::safetensors::save(&tensors, tmp.path().join("adapter_model.safetensors"))?;
    let staged = tmp.keep();
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
    }
    std::fs::rename(&staged, dir).map_err(|e| GraftError::io(dir, e))
}

/// Whether the adapter folder `dir` holds a prompt-learning adapter (rather than LoRA).
pub fn is_prompt_adapter(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("adapter_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["peft_type"].as_str().map(|s| s == "PROMPT_TUNING" || s == "PREFIX_TUNING"))
        .unwrap_or(false)
}

/// Reads a PEFT prompt-tuning or prefix-tuning folder and sets it on `model`. The config and
/// the tensor are checked against the model first; every mismatch is reported.
pub fn load_prompt(dir: &Path, model: &mut Llama) -> Result<PromptAdapter> {
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| GraftError::io(&cfg_path, e))?;
    let cfg: PeftPromptConfig = serde_json::from_str(&text)
        .map_err(|e| GraftError::model(&cfg_path, format!("not a PEFT prompt-learning config: {e}")))?;
    let kind = match cfg.peft_type.as_str() {
        "PROMPT_TUNING" => PromptKind::PromptTuning,
        "PREFIX_TUNING" => PromptKind::PrefixTuning,
        other => {
            return Err(GraftError::model(
                &cfg_path,
                format!("peft_type {other} is not PROMPT_TUNING or PREFIX_TUNING"),
            ))
        }
    };
    let m = model.config();
    let prefix = kind == PromptKind::PrefixTuning;
    let mut problems = Vec::new();
    if cfg.num_virtual_tokens == 0 {
        problems.push("num_virtual_tokens is 0".to_string());
    }
    if cfg.num_transformer_submodules != 1 {
        problems.push(format!(
            "num_transformer_submodules is {}, decoder-only models need 1",
            cfg.num_transformer_submodules
        ));
    }
    if cfg.prefix_projection == Some(true) {
        problems.push("prefix_projection = true (an MLP-produced prefix) is not supported".into());
    }
    let want_dim = if prefix { m.num_key_value_heads * m.head_dim() } else { m.hidden_size };
    if cfg.token_dim != want_dim {
        problems.push(format!("token_dim is {}, this model needs {want_dim}", cfg.token_dim));
    }
    if prefix && cfg.num_layers != m.num_hidden_layers {
        problems.push(format!("num_layers is {}, this model has {}", cfg.num_layers, m.num_hidden_layers));
    }
    let weights_path = dir.join("adapter_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights_path, model.device())
        .map_err(|e| GraftError::model(&weights_path, e.to_string()))?;
    let values = tensors.remove(PROMPT_EMBEDDINGS);
    let want = VirtualTokens::expected_dims(prefix, cfg.num_virtual_tokens, m);
    match &values {
        None => problems.push(format!("{} has no `{PROMPT_EMBEDDINGS}` tensor", weights_path.display())),
        Some(t) if t.dims() != want => {
            problems.push(format!("`{PROMPT_EMBEDDINGS}` has shape {:?}, expected {want:?}", t.dims()))
        }
        Some(_) => {}
    }
    for k in tensors.keys() {
        problems.push(format!("{k}: not a prompt-learning tensor"));
    }
    let Some(values) = values.filter(|_| problems.is_empty()) else {
        return Err(GraftError::model(dir, format!("adapter does not fit the model:\n  {}", problems.join("\n  "))));
    };
    let init = match (cfg.prompt_tuning_init.as_deref(), cfg.prompt_tuning_init_text) {
        (Some("TEXT"), Some(t)) => PromptInit::Text(t),
        _ => PromptInit::Random,
    };
    let spec = PromptSpec { kind, num_virtual_tokens: cfg.num_virtual_tokens, init };
    prompt::from_tensor(model, spec, &values)
}
