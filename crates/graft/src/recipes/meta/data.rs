//! The examples of a `graft meta` run and their classes (AppStream components by category, or a
//! labelled JSONL file, or the classes of image datasets), and their features, kept in a file
//! between runs.

use super::config::DecoderFeatures;
use super::config::MetaData;
use crate::data::read_labelled;
use crate::datasets::appstream::{self, default_files};
use crate::datasets::appstream_classes::category_classes;
use crate::features::{decoder_features, encoder_features};
use crate::meta::ClassMembers;
use crate::models::bert::SentenceEncoder;
use crate::models::efficientnet::EfficientNetLite;
use crate::models::llama::Llama;
use crate::tokenizer::Tokenizer;
use crate::vision::classifier::{image_features, ImageInput};
use crate::vision::Image;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// The examples of a run: texts for a sentence encoder, or images for an image backbone.
pub enum MetaInputs {
    /// One text per example.
    Texts(Vec<String>),
    /// One image per example.
    Images(Vec<Image>),
}

impl MetaInputs {
    /// Number of examples.
    pub fn len(&self) -> usize {
        match self {
            MetaInputs::Texts(t) => t.len(),
            MetaInputs::Images(i) => i.len(),
        }
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the examples are, for messages: `texts` or `images`.
    pub fn kind(&self) -> &'static str {
        match self {
            MetaInputs::Texts(_) => "texts",
            MetaInputs::Images(_) => "images",
        }
    }
}

/// The inputs of a run and their classes (member indices into `inputs`).
pub struct MetaDataset {
    /// One input per example (only examples that have a class).
    pub inputs: MetaInputs,
    /// Each class's name and examples, sorted by name.
    pub classes: ClassMembers,
    /// What was read, for the log.
    pub note: String,
}

/// Reads the dataset `data` names: AppStream descriptions with one category each as their class
/// ([`category_classes`]), the classes of image datasets, or every line of a `{"text", "label"}`
/// JSONL file.
pub fn load_dataset(data: &MetaData, offline: bool) -> Result<MetaDataset> {
    if data.source == "images" {
        return load_images(data, offline);
    }
    if data.source != "appstream" {
        let path = Path::new(&data.source);
        let records = read_labelled(path)?;
        let mut by_label: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            by_label.entry(r.label.clone()).or_default().push(i);
        }
        let note = format!("{}: {} examples in {} classes", path.display(), records.len(), by_label.len());
        let texts = records.into_iter().map(|r| r.text).collect();
        return Ok(MetaDataset { inputs: MetaInputs::Texts(texts), classes: by_label.into_iter().collect(), note });
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
    Ok(MetaDataset { inputs: MetaInputs::Texts(texts), classes, note })
}

/// The training images of every set in `data.image_sets`, `images_per_class` of each class
/// (drawn with `split_seed`), each class named `SET:CLASS`. A class with fewer images keeps all
/// of them (the episode sampler then names it if it is too small).
fn load_images(data: &MetaData, offline: bool) -> Result<MetaDataset> {
    let (mut images, mut classes) = (Vec::new(), Vec::new());
    for (s, set) in data.image_sets.iter().enumerate() {
        let (train, _, names) = crate::recipes::image_train::load_dataset(set, offline)?;
        for (c, name) in names.iter().enumerate() {
            let stream = ((s as u64) << 32) | c as u64;
            let of_class = crate::recipes::image_train::class_sample(
                &train.labels,
                c,
                data.images_per_class,
                data.split_seed,
                stream,
            );
            let start = images.len();
            images.extend(of_class.iter().map(|&i| train.images[i].clone()));
            classes.push((format!("{set}:{name}"), (start..images.len()).collect()));
        }
    }
    classes.sort_by(|a: &(String, Vec<usize>), b| a.0.cmp(&b.0));
    let note = format!(
        "images: {} of {} classes from {} (at most {} per class)",
        images.len(),
        classes.len(),
        data.image_sets.join(", "),
        data.images_per_class
    );
    Ok(MetaDataset { inputs: MetaInputs::Images(images), classes, note })
}

/// A fingerprint of what the features depend on: the backbone, its precision, the input size
/// and every input.
fn fingerprint(encoder: &str, dtype: &str, size: usize, inputs: &MetaInputs) -> String {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(encoder.as_bytes());
    part(dtype.as_bytes());
    match inputs {
        MetaInputs::Texts(texts) => texts.iter().for_each(|t| part(t.as_bytes())),
        MetaInputs::Images(images) => {
            part(&(size as u64).to_le_bytes());
            for img in images {
                part(&[img.width as u64, img.height as u64, img.channels as u64].map(u64::to_le_bytes).concat());
                part(&img.pixels);
            }
        }
    }
    hex::encode(h.finalize())
}

/// The backbone that turns a run's inputs into features.
pub enum FeatureBackbone {
    /// A sentence encoder, for texts (`batch` texts per pass).
    Text(Box<SentenceEncoder>, usize),
    /// An image backbone, for images.
    Image(Box<EfficientNetLite>, ImageInput),
    /// A decoder, for texts: its tokenizer, how its states are pooled, texts per pass.
    Decoder(Box<Llama>, Box<Tokenizer>, DecoderFeatures, usize),
}

/// Each text's first `max_tokens` token ids, as a decoder reads it; a text without tokens is
/// refused by index.
pub fn decoder_tokens(tok: &Tokenizer, texts: &[String], max_tokens: usize) -> Result<Vec<Vec<u32>>> {
    let mut seqs = Vec::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        let mut ids = tok.encode_plain(t).map_err(|e| GraftError::Input(format!("text {i}: {e}")))?;
        ids.truncate(max_tokens);
        if ids.is_empty() {
            return Err(GraftError::Input(format!("text {i} has no tokens")));
        }
        seqs.push(ids);
    }
    Ok(seqs)
}

/// `[n, dim]` f32 features of `inputs` on `device`: read from `path` when its sidecar (`path`
/// with `.json`) holds the same fingerprint of `encoder`, `dtype`, `size` and the inputs,
/// otherwise computed with the backbone `load` gives and written there. Returns whether they were
/// read.
pub fn cached_features(
    path: &Path,
    (encoder, dtype, size): (&str, &str, usize),
    inputs: &MetaInputs,
    device: &Device,
    load: impl FnOnce() -> Result<FeatureBackbone>,
) -> Result<(Tensor, bool)> {
    let want = fingerprint(encoder, dtype, size, inputs);
    let side = path.with_extension("json");
    let stored = std::fs::read_to_string(&side).ok().and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
    if stored.as_ref().and_then(|v| v["fingerprint"].as_str()) == Some(want.as_str()) {
        if let Ok(mut map) = candle_core::safetensors::load(path, device) {
            if let Some(t) = map.remove("features").filter(|t| t.dims2().is_ok_and(|(n, _)| n == inputs.len())) {
                return Ok((t.to_dtype(DType::F32)?, true));
            }
        }
    }
    let features = match (load()?, inputs) {
        (FeatureBackbone::Text(enc, batch), MetaInputs::Texts(texts)) => encoder_features(&enc, texts, batch)?,
        (FeatureBackbone::Image(model, input), MetaInputs::Images(images)) => {
            let refs: Vec<&Image> = images.iter().collect();
            image_features(&model, &refs, &input)?
        }
        (FeatureBackbone::Decoder(model, tok, how, batch), MetaInputs::Texts(texts)) => {
            decoder_features(&model, &decoder_tokens(&tok, texts, how.max_tokens)?, how.layer, how.pooling, batch)?
        }
        _ => return Err(GraftError::Input("the backbone does not read this kind of input".into())),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
    }
    crate::io::safetensors::save_atomic([("features".to_string(), features.clone())], path)?;
    let meta = serde_json::json!({
        "fingerprint": want, "encoder": encoder, "dtype": dtype, inputs.kind(): inputs.len(),
    });
    crate::io::write_atomic(&side, &serde_json::to_string_pretty(&meta)?)?;
    Ok((features, false))
}
