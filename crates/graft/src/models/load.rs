//! Turning a resolved model source (GGUF file or Hugging Face folder) into a model.

use super::hparams::{check_json_types, JsonKind};
use super::llama::random::RandomWeights;
use super::llama::{
    BlockExpansion, ExpandedBlocks, GgufWeights, KeepLayers, KeptBlocks, Llama, LlamaConfig, LoadOptions,
    SafetensorsWeights, StudentLineage, WeightSource,
};
use crate::assets::ModelSource;
use crate::io::gguf::GgufFile;
use crate::{GraftError, Result};
use std::path::{Path, PathBuf};

/// Architectures graft can build, as named in GGUF `general.architecture`.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "gemma3"];

/// `model_type`s of Hugging Face folders graft can build (Gemma 3 is read from GGUF only).
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama"];

/// Loads a causal language model from a GGUF file or a Hugging Face folder.
pub fn load_causal_lm(source: &ModelSource, opts: &LoadOptions) -> Result<Llama> {
    load_causal_lm_keeping(source, opts, None)
}

/// [`load_causal_lm`], building a smaller student when `keep` is given (`model.keep_layers`):
/// only those decoder blocks, initialised from the model's weights and renumbered `0..n`, with
/// `num_hidden_layers` = n. The model's [`Llama::lineage`] records the kept blocks (composed with
/// the lineage the file already carries, so a student of a student names the first teacher's
/// blocks).
pub fn load_causal_lm_keeping(source: &ModelSource, opts: &LoadOptions, keep: Option<&KeepLayers>) -> Result<Llama> {
    load_with(source, |cfg, src, lineage| match keep {
        Some(keep) => build_student(cfg, src, lineage, opts, keep),
        None => Ok(Llama::load(cfg, src, opts)?.with_lineage(lineage)),
    })
}

/// [`load_causal_lm`] grown by `n_new` identity blocks (`model.expand_blocks`, LLaMA Pro): the
/// blocks of [`BlockExpansion::plan`] are inserted, each a copy of the block before it with
/// `o_proj` and `down_proj` zeroed, so the model computes exactly what the loaded one does. Its
/// [`Llama::expansion`] names the new blocks. The grown model is no student of anything: a student
/// lineage the file carries is not kept (it names one kept block per block).
pub fn load_causal_lm_expanding(source: &ModelSource, opts: &LoadOptions, n_new: usize) -> Result<Llama> {
    load_with(source, |cfg, src, _| {
        if cfg.gemma3().is_some() {
            // As for students: a Gemma 3 block's kind follows from its index, so the blocks after
            // an inserted one would silently change kind.
            return Err(super::llama::expand::bad(
                "growing Gemma 3 models is not supported (a block's sliding-window or global attention follows \
                 from its index, so every block after a new one would change kind)"
                    .into(),
            ));
        }
        let plan = BlockExpansion::plan(cfg.num_hidden_layers, n_new)?;
        cfg.check_tensors(src)?;
        let sources = plan.sources();
        let grown = LlamaConfig { num_hidden_layers: plan.num_hidden_layers(), ..cfg };
        Ok(Llama::load(grown, &ExpandedBlocks::new(src, &plan, &sources), opts)?.with_expansion(Some(plan)))
    })
}

/// The architecture of `source` (its config, from the GGUF header or `config.json`), without
/// reading weights: for checks that must run before anything is loaded.
pub fn read_config_of(source: &ModelSource) -> Result<LlamaConfig> {
    match source {
        ModelSource::Gguf(path) => Ok(LlamaConfig::from_gguf(&open_gguf(path)?)?),
        ModelSource::HfFolder(dir) => Ok(read_hf(dir)?.0),
    }
}

/// Opens `source` and hands its config, weights and the student lineage it records to `build`.
fn load_with(
    source: &ModelSource,
    build: impl FnOnce(LlamaConfig, &dyn WeightSource, Option<StudentLineage>) -> Result<Llama>,
) -> Result<Llama> {
    match source {
        ModelSource::Gguf(path) => {
            let gguf = open_gguf(path)?;
            let cfg = LlamaConfig::from_gguf(&gguf)?;
            let lineage = StudentLineage::from_gguf(&gguf, cfg.num_hidden_layers)?;
            let src = GgufWeights::new(&gguf, &cfg);
            build(cfg, &src, lineage)
        }
        ModelSource::HfFolder(dir) => {
            let (cfg, lineage) = read_hf(dir)?;
            let src = SafetensorsWeights::open(dir, &safetensors_files(dir)?)?;
            build(cfg, &src, lineage)
        }
    }
}

/// A model with the architecture of `source` (its config, read and checked against the file's
/// tensor shapes without loading weights) and seeded random weights: the from-scratch baseline
/// of a transfer comparison. `keep` keeps some blocks, as in [`load_causal_lm_keeping`].
pub fn load_causal_lm_random(
    source: &ModelSource,
    opts: &LoadOptions,
    seed: u64,
    keep: Option<&KeepLayers>,
) -> Result<Llama> {
    let (cfg, lineage) = match source {
        ModelSource::Gguf(path) => {
            let gguf = open_gguf(path)?;
            let cfg = LlamaConfig::from_gguf(&gguf)?;
            cfg.check_tensors(&GgufWeights::new(&gguf, &cfg))?;
            let lineage = StudentLineage::from_gguf(&gguf, cfg.num_hidden_layers)?;
            (cfg, lineage)
        }
        ModelSource::HfFolder(dir) => {
            let (cfg, lineage) = read_hf(dir)?;
            cfg.check_tensors(&SafetensorsWeights::open(dir, &safetensors_files(dir)?)?)?;
            (cfg, lineage)
        }
    };
    let src = RandomWeights::new(cfg.clone(), seed);
    match keep {
        Some(keep) => build_student(cfg, &src, lineage, opts, keep),
        None => Ok(Llama::load(cfg, &src, opts)?.with_lineage(lineage)),
    }
}

/// Opens a GGUF file of an architecture graft can build.
fn open_gguf(path: &Path) -> Result<GgufFile> {
    let gguf = GgufFile::open(path)?;
    let arch = gguf.meta_str("general.architecture")?;
    if !SUPPORTED_ARCHITECTURES.contains(&arch) {
        return Err(GraftError::model(
            path,
            format!("unknown architecture `{arch}`: graft can build {SUPPORTED_ARCHITECTURES:?}"),
        ));
    }
    Ok(gguf)
}

/// Builds the student of the blocks `keep` keeps of the model `cfg` describes in `src` (the whole
/// model is checked against its tensors first).
fn build_student(
    cfg: LlamaConfig,
    src: &dyn WeightSource,
    lineage: Option<StudentLineage>,
    opts: &LoadOptions,
    keep: &KeepLayers,
) -> Result<Llama> {
    if cfg.gemma3().is_some() {
        // Gemma 3 decides a block's attention (sliding or global, and its RoPE base) by its
        // index, so renumbered blocks would silently change kind.
        return Err(GraftError::Input(
            "model.keep_layers: students of Gemma 3 models are not supported (a block's sliding-window or global \
             attention follows from its index)"
                .into(),
        ));
    }
    let kept = keep.resolve(cfg.num_hidden_layers)?;
    cfg.check_tensors(src)?;
    let lineage = StudentLineage::keeping(lineage.as_ref(), cfg.num_hidden_layers, &kept);
    let student = LlamaConfig { num_hidden_layers: kept.len(), ..cfg };
    Ok(Llama::load(student, &KeptBlocks::new(src, &kept), opts)?.with_lineage(Some(lineage)))
}

/// The numeric fields of a Llama `config.json`, with the JSON type each must have.
const LLAMA_JSON_FIELDS: &[(&str, JsonKind, bool)] = &[
    ("vocab_size", JsonKind::Count, false),
    ("hidden_size", JsonKind::Count, false),
    ("intermediate_size", JsonKind::Count, false),
    ("num_hidden_layers", JsonKind::Count, false),
    ("num_attention_heads", JsonKind::Count, false),
    ("num_key_value_heads", JsonKind::Count, false),
    ("head_dim", JsonKind::Count, true),
    ("rope_theta", JsonKind::Number, false),
    ("rms_norm_eps", JsonKind::Number, false),
    ("max_position_embeddings", JsonKind::Count, false),
    ("bos_token_id", JsonKind::TokenId, true),
    ("eos_token_id", JsonKind::TokenId, true),
];

/// Reads `config.json` of a Hugging Face folder, checking it describes a Llama-family model with
/// valid hyperparameters ([`LlamaConfig::validate`]; errors name the JSON key and its value).
pub fn read_hf_config(dir: &Path) -> Result<LlamaConfig> {
    read_hf(dir).map(|(cfg, _)| cfg)
}

/// [`read_hf_config`] with the student lineage the file records, if any.
fn read_hf(dir: &Path) -> Result<(LlamaConfig, Option<StudentLineage>)> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| GraftError::io(&path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| GraftError::model(&path, format!("invalid JSON: {e}")))?;
    let model_type = value.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    if !SUPPORTED_MODEL_TYPES.contains(&model_type) {
        return Err(GraftError::model(
            &path,
            format!("unknown model_type `{model_type}`: graft can build {SUPPORTED_MODEL_TYPES:?} from a folder"),
        ));
    }
    if let Some(obj) = value.as_object() {
        check_json_types(obj, LLAMA_JSON_FIELDS).map_err(|e| GraftError::model(&path, e.to_string()))?;
    }
    let lineage_json = value.get(StudentLineage::JSON_KEY).cloned();
    let cfg: LlamaConfig =
        serde_json::from_value(value).map_err(|e| GraftError::model(&path, format!("not a Llama config: {e}")))?;
    cfg.validate().map_err(|e| GraftError::model(&path, e.to_string()))?;
    let lineage = StudentLineage::from_json(&path, lineage_json.as_ref(), cfg.num_hidden_layers)?;
    Ok((cfg, lineage))
}

/// The safetensors files of a folder: the shards listed in `model.safetensors.index.json`, or
/// `model.safetensors`.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| GraftError::io(&index, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| GraftError::model(&index, format!("invalid JSON: {e}")))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| GraftError::model(&index, "no `weight_map` object"))?;
        let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(GraftError::model(dir, "no model.safetensors or model.safetensors.index.json in the folder"))
}
