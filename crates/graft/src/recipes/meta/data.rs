//! The examples of a `graft meta` run and their classes (AppStream components by category, or a
//! labelled JSONL file), and their embeddings, kept in a file between runs.

use super::config::MetaData;
use crate::data::read_labelled;
use crate::datasets::appstream::{self, default_files};
use crate::datasets::appstream_classes::category_classes;
use crate::features::encoder_features;
use crate::meta::ClassMembers;
use crate::models::bert::SentenceEncoder;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// The inputs of a run and their classes (member indices into `texts`).
pub struct MetaDataset {
    /// One text per example (only examples that have a class).
    pub texts: Vec<String>,
    /// Each class's name and examples, sorted by name.
    pub classes: ClassMembers,
    /// What was read, for the log.
    pub note: String,
}

/// Reads the dataset `data` names: AppStream descriptions with one category each as their class
/// ([`category_classes`]), or every line of a `{"text", "label"}` JSONL file.
pub fn load_dataset(data: &MetaData) -> Result<MetaDataset> {
    if data.source != "appstream" {
        let path = Path::new(&data.source);
        let records = read_labelled(path)?;
        let mut by_label: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            by_label.entry(r.label.clone()).or_default().push(i);
        }
        let note = format!("{}: {} examples in {} classes", path.display(), records.len(), by_label.len());
        let texts = records.into_iter().map(|r| r.text).collect();
        return Ok(MetaDataset { texts, classes: by_label.into_iter().collect(), note });
    }
    let files = if data.appstream_files.is_empty() { default_files()? } else { data.appstream_files.clone() };
    let (mut comps, mut seen) = (Vec::new(), HashSet::new());
    for f in &files {
        comps.extend(appstream::read(f)?.0.into_iter().filter(|c| seen.insert(c.id.clone())));
    }
    let chosen = category_classes(&comps, data.min_class_size, data.class_rule);
    let mut texts = Vec::new();
    let mut classes = Vec::with_capacity(chosen.classes.len());
    for (name, members) in chosen.classes {
        let start = texts.len();
        texts.extend(members.iter().map(|&m| comps[m].description.clone()));
        classes.push((name, (start..texts.len()).collect()));
    }
    let note = format!(
        "AppStream: {} components, {} in {} classes of at least {} ({:?}), {} without a class",
        comps.len(),
        texts.len(),
        classes.len(),
        data.min_class_size,
        data.class_rule,
        chosen.unlabelled
    );
    Ok(MetaDataset { texts, classes, note })
}

/// A fingerprint of what the embeddings depend on: the encoder, its precision and every text.
fn fingerprint(encoder: &str, dtype: &str, texts: &[String]) -> String {
    let mut h = Sha256::new();
    for part in [encoder, dtype] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for t in texts {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    hex::encode(h.finalize())
}

/// `[n, dim]` f32 embeddings of `texts` on `device`: read from `path` when its sidecar
/// (`path` with `.json`) holds the same fingerprint of `encoder`, `dtype` and the texts,
/// otherwise computed with the encoder `load` gives and written there. Returns whether they were
/// read.
pub fn cached_features(
    path: &Path,
    encoder: &str,
    dtype: &str,
    texts: &[String],
    batch: usize,
    device: &Device,
    load: impl FnOnce() -> Result<SentenceEncoder>,
) -> Result<(Tensor, bool)> {
    let want = fingerprint(encoder, dtype, texts);
    let side = path.with_extension("json");
    let stored = std::fs::read_to_string(&side).ok().and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
    if stored.as_ref().and_then(|v| v["fingerprint"].as_str()) == Some(want.as_str()) {
        if let Ok(mut map) = candle_core::safetensors::load(path, device) {
            if let Some(t) = map.remove("features").filter(|t| t.dims2().is_ok_and(|(n, _)| n == texts.len())) {
                return Ok((t.to_dtype(DType::F32)?, true));
            }
        }
    }
    let enc = load()?;
    let features = encoder_features(&enc, texts, batch)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
    }
    crate::io::safetensors::save_atomic([("features".to_string(), features.clone())], path)?;
    let meta = serde_json::json!({ "fingerprint": want, "encoder": encoder, "dtype": dtype, "texts": texts.len() });
    crate::io::write_atomic(&side, &serde_json::to_string_pretty(&meta)?)?;
    Ok((features, false))
}
