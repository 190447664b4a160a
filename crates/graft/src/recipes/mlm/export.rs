//! Writing an adapted encoder as a Hugging Face folder in `BertForMaskedLM` layout: encoder
//! tensors under `bert.`, the MLM head under `cls.predictions.*` (the decoder tied to the word
//! embeddings, so not stored apart), `config.json`, and the source folder's tokenizer and
//! sentence-transformers files (`tokenizer.json`, `1_Pooling/`, ...); without a head (SimCSE)
//! the encoder tensors alone, as `BertModel`. `graft embed`, the encoder
//! probes and `graft pretrain-mlm` itself load it like the original.

use crate::models::bert::{MlmHead, SentenceEncoder};
use crate::{GraftError, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// Files of a Hugging Face folder that hold weights (replaced by the export's own).
fn is_weight_file(name: &str) -> bool {
    [".safetensors", ".bin", ".h5", ".msgpack", ".ot", ".onnx", ".index.json"].iter().any(|ext| name.ends_with(ext))
}

/// Whether the file `name` stays behind: hidden files (the cache's checksums), weights, and the
/// top-level `config.json` (written apart).
fn skipped(name: &str, top: bool) -> bool {
    name.starts_with('.') || is_weight_file(name) || (top && name == "config.json")
}

/// Copies the non-weight files of `from` into `to`, with sentence-transformers module folders
/// (`1_Pooling/`, `2_Normalize/`) recursively; the top-level `config.json` is written apart and
/// hidden files (the cache's checksums) are left out.
fn copy_support_files(from: &Path, to: &Path, top: bool) -> Result<()> {
    let entries = std::fs::read_dir(from).map_err(|e| GraftError::io(from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| GraftError::io(from, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let (src, dst) = (entry.path(), to.join(&name));
        let module = name.split_once('_').is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if src.is_dir() && module {
            std::fs::create_dir_all(&dst).map_err(|e| GraftError::io(&dst, e))?;
            copy_support_files(&src, &dst, false)?;
        } else if src.is_file() && !skipped(&name, top) {
            std::fs::copy(&src, &dst).map_err(|e| GraftError::io(&dst, e))?;
        }
    }
    Ok(())
}

/// Writes `enc` with `head` (if any) as a Hugging Face folder at `dir` (replacing it), taking the
/// tokenizer and sentence-transformers files from `source` (the folder it was loaded from).
/// Written into a sibling temporary folder and renamed into place.
pub fn write_encoder_folder(enc: &SentenceEncoder, head: Option<&MlmHead>, source: &Path, dir: &Path) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| GraftError::io(parent, e))?;
    let tmp =
        tempfile::Builder::new().prefix(".graft-export-").tempdir_in(parent).map_err(|e| GraftError::io(parent, e))?;
    copy_support_files(source, tmp.path(), true)?;

    let model = enc.model();
    let mut config = serde_json::to_value(model.config())?;
    let src_config = source.join("config.json");
    if let Ok(text) = std::fs::read_to_string(&src_config) {
        // Keep the source's other keys (initializer_range, dropout rates, ...).
        let mut original: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| GraftError::model(&src_config, format!("invalid JSON: {e}")))?;
        if let (Some(orig), Some(ours)) = (original.as_object_mut(), config.as_object()) {
            orig.extend(ours.clone());
            config = original;
        }
    }
    if let Some(obj) = config.as_object_mut() {
        let architecture = if head.is_some() { "BertForMaskedLM" } else { "BertModel" };
        obj.insert("architectures".into(), serde_json::json!([architecture]));
        obj.insert("tie_word_embeddings".into(), true.into());
        obj.insert("torch_dtype".into(), crate::io::hf_folder::torch_dtype(model.dtype()).into());
    }
    let path = tmp.path().join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?).map_err(|e| GraftError::io(&path, e))?;

    let encoder = model.named_tensors()?.into_iter().map(|(n, t)| (format!("bert.{n}"), t));
    let tensors: HashMap<String, Tensor> = encoder
        .chain(head.map(MlmHead::named_tensors).unwrap_or_default())
        .map(|(n, t)| Ok((n, t.detach().contiguous()?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&tensors, tmp.path().join("model.safetensors"))?;

    let staged = tmp.keep();
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
    }
    std::fs::rename(&staged, dir).map_err(|e| GraftError::io(dir, e))?;
    Ok(())
}
