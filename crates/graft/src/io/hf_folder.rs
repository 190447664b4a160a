//! Writing a model as a Hugging Face folder that transformers loads: `config.json`,
//! `model.safetensors` (HF names and layout), `generation_config.json`, `tokenizer.json` and
//! `tokenizer_config.json` (with the chat template). A student built with `model.keep_layers`
//! records its lineage under `graft_student` in `config.json` (transformers keeps unknown keys as
//! attributes).

use crate::models::llama::{Llama, StudentLineage};
use crate::tokenizer::Tokenizer;
use crate::{GraftError, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The `torch_dtype` string transformers expects for a candle dtype.
pub fn torch_dtype(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        _ => "float32",
    }
}

/// Writes `model` (dense weights in `dtype`) and `tokenizer` as an HF folder at `dir`.
///
/// Everything is written into a sibling temporary folder first and renamed into place, so a
/// crash never leaves a half-written folder at `dir`. An existing `dir` is replaced.
pub fn write_llama_folder(model: &Llama, tokenizer: &Tokenizer, dir: &Path, dtype: DType) -> Result<()> {
    model.config().require_llama("writing a Hugging Face folder")?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| GraftError::io(parent, e))?;
    let tmp =
        tempfile::Builder::new().prefix(".graft-export-").tempdir_in(parent).map_err(|e| GraftError::io(parent, e))?;

    let cfg = model.config();
    let mut config = serde_json::to_value(cfg)?;
    let obj = config.as_object_mut().ok_or_else(|| GraftError::Input("config is not an object".into()))?;
    obj.insert("architectures".into(), serde_json::json!(["LlamaForCausalLM"]));
    obj.insert("model_type".into(), "llama".into());
    obj.insert("hidden_act".into(), "silu".into());
    obj.insert("torch_dtype".into(), torch_dtype(dtype).into());
    obj.insert("attention_bias".into(), false.into());
    obj.insert("mlp_bias".into(), false.into());
    if let Some(pad) = tokenizer.pad_id() {
        obj.insert("pad_token_id".into(), pad.into());
    }
    if let Some(lineage) = model.lineage() {
        obj.insert(StudentLineage::JSON_KEY.into(), serde_json::to_value(lineage)?);
    }
    write_json(&tmp.path().join("config.json"), &config)?;

    let mut generation = serde_json::Map::new();
    if let Some(bos) = cfg.bos_token_id {
        generation.insert("bos_token_id".into(), bos.into());
    }
    if let Some(eos) = tokenizer.eos_id().or(cfg.eos_token_id) {
        generation.insert("eos_token_id".into(), eos.into());
    }
    if let Some(pad) = tokenizer.pad_id() {
        generation.insert("pad_token_id".into(), pad.into());
    }
    write_json(&tmp.path().join("generation_config.json"), &serde_json::Value::Object(generation))?;

    let tensors: HashMap<String, Tensor> = model
        .named_tensors()?
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(dtype)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let weights = tmp.path().join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights)?;

    tokenizer.save_hf(tmp.path())?;

    let staged = tmp.keep();
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
    }
    std::fs::rename(&staged, dir).map_err(|e| GraftError::io(dir, e))?;
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).map_err(|e| GraftError::io(path, e))
}
