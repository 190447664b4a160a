//! Writing a Whisper model — a downloaded one, or one `graft speech train` adapted (LoRA merged
//! in, or trained weights applied) — as a Hugging Face Whisper folder that transformers
//! (`WhisperForConditionalGeneration.from_pretrained`), PEFT and CTranslate2's converter read:
//! `config.json`, `generation_config.json`, `model.safetensors` and `tokenizer.json`.

use super::transcribe::Transcriber;
use crate::models::whisper::HfWhisperSizes;
use crate::{GraftError, Result};
use candle_core::DType;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// The folder.
    pub out: PathBuf,
    /// Tensors in `model.safetensors`.
    pub tensors: usize,
    /// Parameters in them.
    pub parameters: usize,
    /// `float32` or `float16`.
    pub dtype: String,
}

/// The token id of `token`, or an error naming it.
fn id(tr: &Transcriber, token: &str) -> Result<u32> {
    tr.tokens().id(token).ok_or_else(|| GraftError::Input(format!("the vocabulary has no `{token}`")))
}

/// `config.json` and `generation_config.json` of the model.
fn configs(tr: &Transcriber, dtype: &str) -> Result<(Value, Value)> {
    let m = tr.model();
    let tokens = tr.tokens();
    let c = tr.config();
    let mut config = serde_json::to_value(HfWhisperSizes::of(&m.dims))?;
    let extra = json!({
        "model_type": "whisper",
        "architectures": ["WhisperForConditionalGeneration"],
        "activation_function": "gelu",
        "scale_embedding": false,
        "tie_word_embeddings": true,
        "bos_token_id": tokens.eot,
        "eos_token_id": tokens.eot,
        "pad_token_id": tokens.eot,
        "decoder_start_token_id": tokens.sot,
        "suppress_tokens": c.suppress_ids,
        "begin_suppress_tokens": c.suppress_ids_begin,
        "torch_dtype": dtype,
    });
    config.as_object_mut().expect("sizes are an object").extend(extra.as_object().expect("object").clone());
    let mut lang_to_id = Map::new();
    for &lang in &c.lang_ids {
        let token = tokens.token(lang).ok_or_else(|| GraftError::Input(format!("language id {lang} has no token")))?;
        lang_to_id.insert(token.to_string(), json!(lang));
    }
    let mut generation = json!({
        "decoder_start_token_id": tokens.sot,
        "bos_token_id": tokens.eot,
        "eos_token_id": tokens.eot,
        "pad_token_id": tokens.eot,
        "max_length": m.dims.text_ctx,
        "suppress_tokens": c.suppress_ids,
        "begin_suppress_tokens": c.suppress_ids_begin,
        "no_timestamps_token_id": tokens.no_timestamps,
        "is_multilingual": tr.multilingual(),
    });
    if tr.multilingual() {
        let g = generation.as_object_mut().expect("object");
        g.insert("lang_to_id".into(), Value::Object(lang_to_id));
        let task_to_id = json!({"transcribe": tokens.transcribe, "translate": id(tr, "<|translate|>")?});
        g.insert("task_to_id".into(), task_to_id);
    }
    Ok((config, generation))
}

/// Writes `tr`'s network (adapters merged) in `dtype` (F32 or F16) as a Hugging Face Whisper
/// folder at `out`, staged beside it and renamed into place; an existing folder is replaced.
pub fn write_hf_folder(tr: &Transcriber, out: &Path, dtype: DType) -> Result<ExportSummary> {
    let dtype_name = match dtype {
        DType::F32 => "float32",
        DType::F16 => "float16",
        other => return Err(GraftError::Input(format!("export dtype {other:?}: expected f32 or f16"))),
    };
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| GraftError::io(parent, e))?;
    let stage =
        tempfile::Builder::new().prefix(".graft-whisper-").tempdir_in(parent).map_err(|e| GraftError::io(parent, e))?;
    let (config, generation) = configs(tr, dtype_name)?;
    for (name, value) in [("config.json", &config), ("generation_config.json", &generation)] {
        let path = stage.path().join(name);
        std::fs::write(&path, serde_json::to_string_pretty(value)?).map_err(|e| GraftError::io(&path, e))?;
    }
    let tensors = tr.model().hf_tensors(dtype)?;
    let parameters = tensors.iter().map(|(_, t)| t.elem_count()).sum();
    let n = tensors.len();
    let map: std::collections::HashMap<String, candle_core::Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, stage.path().join("model.safetensors"))?;
    let tok = stage.path().join("tokenizer.json");
    std::fs::copy(tr.tokenizer_json(), &tok).map_err(|e| GraftError::io(&tok, e))?;
    let staged = stage.keep();
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| GraftError::io(out, e))?;
    }
    std::fs::rename(&staged, out).map_err(|e| GraftError::io(out, e))?;
    Ok(ExportSummary { out: out.to_path_buf(), tensors: n, parameters, dtype: dtype_name.into() })
}
