//! PEFT's LoRA adapter format: `adapter_config.json` + `adapter_model.safetensors`, tensors named
//! `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` in Hugging Face layout, so
//! `peft.PeftModel.from_pretrained(base, dir)` loads what graft trains and graft loads PEFT's.

use crate::adapters::lora::{self, Adaptable, LoraLayer, LoraSet, LoraSpec};
use crate::models::llama::{Llama, StudentLineage};
use crate::{GraftError, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The fields of PEFT's `adapter_config.json` graft writes and reads (others are ignored on read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeftLoraConfig {
    /// Always `LORA`.
    pub peft_type: String,
    /// Always `CAUSAL_LM` for decoder models.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Rank.
    pub r: usize,
    /// α.
    pub lora_alpha: f64,
    /// Dropout.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Module names the adapter targets (PEFT also allows one string, a regex or `all-linear`).
    #[serde(deserialize_with = "string_or_list")]
    pub target_modules: Vec<String>,
    /// rsLoRA scaling.
    #[serde(default)]
    pub use_rslora: bool,
    /// The base model the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// `none` (graft trains no biases).
    #[serde(default = "default_bias")]
    pub bias: String,
    /// Whether weights are stored transposed (never for Llama).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// PEFT's flag for a frozen adapter.
    #[serde(default)]
    pub inference_mode: bool,
    /// DoRA (not produced by graft).
    #[serde(default)]
    pub use_dora: bool,
    /// PEFT's per-module ranks (graft reads adapters with one rank only).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    /// PEFT's per-module alphas (graft reads adapters with one alpha only).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
}

/// Reads `target_modules` given as a list or as one string.
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Targets {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Targets::deserialize(d)? {
        Targets::One(s) => vec![s],
        Targets::Many(v) => v,
    })
}

fn default_bias() -> String {
    "none".into()
}

/// PEFT's tensor name for graft's `module` (e.g. `layers.0.self_attn.q_proj`) and factor `A`/`B`.
/// The LM head sits beside the decoder in transformers, so it has no second `model.`.
pub fn peft_tensor_name(module: &str, factor: char) -> String {
    if module == "lm_head" {
        format!("base_model.model.lm_head.lora_{factor}.weight")
    } else {
        format!("base_model.model.model.{module}.lora_{factor}.weight")
    }
}

/// The file beside `adapter_config.json` that names the student an adapter was trained on
/// (`model.keep_layers`); PEFT ignores it, graft refuses to attach the adapter to another model.
pub const STUDENT_FILE: &str = "graft_student.json";

/// Writes `set` as a PEFT adapter folder at `dir` (atomically: staged, then renamed).
pub fn save_lora(set: &LoraSet, dir: &Path, base_model: &str) -> Result<()> {
    save_lora_with_lineage(set, dir, base_model, None)
}

/// [`save_lora`] for an adapter trained on a smaller student: `lineage` goes into
/// [`STUDENT_FILE`], so the adapter is only ever attached to that student.
pub fn save_lora_with_lineage(
    set: &LoraSet,
    dir: &Path,
    base_model: &str,
    lineage: Option<&StudentLineage>,
) -> Result<()> {
    save_lora_with_files(set, dir, base_model, lineage, &[])
}

/// [`save_lora_with_lineage`] with more files written into the folder before it appears
/// (`(file name, contents)`, e.g. the task tag of a per-task adapter).
pub fn save_lora_with_files(
    set: &LoraSet,
    dir: &Path,
    base_model: &str,
    lineage: Option<&StudentLineage>,
    extra: &[(&str, String)],
) -> Result<()> {
    write_lora_folder(set, dir, base_model, "CAUSAL_LM", lineage, extra)
}

/// Writes `set`, trained on an encoder-decoder model (Whisper), as a PEFT adapter folder at `dir`
/// (`task_type` `SEQ_2_SEQ_LM`; tensors named `base_model.model.model.decoder.layers.0…`).
pub fn save_seq2seq_lora(set: &LoraSet, dir: &Path, base_model: &str) -> Result<()> {
    write_lora_folder(set, dir, base_model, "SEQ_2_SEQ_LM", None, &[])
}

/// The folder writer behind every `save_*` function.
fn write_lora_folder(
    set: &LoraSet,
    dir: &Path,
    base_model: &str,
    task_type: &str,
    lineage: Option<&StudentLineage>,
    extra: &[(&str, String)],
) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| GraftError::io(parent, e))?;
    let tmp =
        tempfile::Builder::new().prefix(".graft-adapter-").tempdir_in(parent).map_err(|e| GraftError::io(parent, e))?;
    let mut targets: Vec<String> = set.spec.targets.clone();
    targets.sort();
    let cfg = PeftLoraConfig {
        peft_type: "LORA".into(),
        task_type: Some(task_type.into()),
        r: set.spec.r,
        lora_alpha: set.spec.alpha,
        lora_dropout: set.spec.dropout,
        target_modules: targets,
        use_rslora: set.spec.rslora,
        base_model_name_or_path: Some(base_model.into()),
        bias: "none".into(),
        fan_in_fan_out: false,
        inference_mode: true,
        use_dora: false,
        rank_pattern: serde_json::Map::new(),
        alpha_pattern: serde_json::Map::new(),
    };
    let path = tmp.path().join("adapter_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg)?).map_err(|e| GraftError::io(&path, e))?;
    let mut tensors = HashMap::new();
    for l in &set.layers {
        tensors.insert(peft_tensor_name(l.name(), 'A'), l.a().as_tensor().to_dtype(DType::F32)?.contiguous()?);
        tensors.insert(peft_tensor_name(l.name(), 'B'), l.b().as_tensor().to_dtype(DType::F32)?.contiguous()?);
    }
    candle_core::safetensors::save(&tensors, tmp.path().join("adapter_model.safetensors"))?;
    if let Some(lineage) = lineage {
        let path = tmp.path().join(STUDENT_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(lineage)?).map_err(|e| GraftError::io(&path, e))?;
    }
    for (name, contents) in extra {
        let path = tmp.path().join(name);
        std::fs::write(&path, contents).map_err(|e| GraftError::io(&path, e))?;
    }
    let staged = tmp.keep();
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
    }
    std::fs::rename(&staged, dir).map_err(|e| GraftError::io(dir, e))
}

/// Reads a PEFT LoRA adapter folder and attaches it to `model`. Every tensor is checked against
/// the projection it belongs to before anything is attached; all mismatches are listed.
pub fn load_lora(dir: &Path, model: &mut Llama) -> Result<LoraSet> {
    check_student(dir, model)?;
    load_lora_into(dir, model)
}

/// [`load_lora`] for any adaptable model (Whisper: tensors named
/// `base_model.model.model.decoder.layers.0…`), without the student check of the Llama family.
pub fn load_lora_into<M: Adaptable + ?Sized>(dir: &Path, model: &mut M) -> Result<LoraSet> {
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| GraftError::io(&cfg_path, e))?;
    let cfg: PeftLoraConfig = serde_json::from_str(&text)
        .map_err(|e| GraftError::model(&cfg_path, format!("not a PEFT adapter config: {e}")))?;
    if cfg.peft_type != "LORA" || cfg.use_dora || cfg.fan_in_fan_out {
        return Err(GraftError::model(
            &cfg_path,
            format!(
                "unsupported adapter (peft_type {}, dora {}, fan_in_fan_out {})",
                cfg.peft_type, cfg.use_dora, cfg.fan_in_fan_out
            ),
        ));
    }
    if !cfg.rank_pattern.is_empty() || !cfg.alpha_pattern.is_empty() {
        let keys: Vec<&String> = cfg.rank_pattern.keys().chain(cfg.alpha_pattern.keys()).collect();
        return Err(GraftError::model(&cfg_path, format!("rank_pattern / alpha_pattern give modules {keys:?} their own rank or alpha; graft reads adapters with one rank and one alpha")));
    }
    check_target_modules(&cfg, &cfg_path, model)?;
    let weights_path = dir.join("adapter_model.safetensors");
    if !weights_path.is_file() {
        let hint = if dir.join("adapter_model.bin").is_file() {
            "; adapter_model.bin (a pickle) is not read: save the adapter with PEFT's safe_serialization=True"
        } else {
            ""
        };
        return Err(GraftError::model(dir, format!("adapter_model.safetensors is missing{hint}")));
    }
    let tensors = candle_core::safetensors::load(&weights_path, &model.weights_device())
        .map_err(|e| GraftError::model(&weights_path, e.to_string()))?;
    let spec = LoraSpec {
        r: cfg.r,
        alpha: cfg.lora_alpha,
        dropout: cfg.lora_dropout,
        rslora: cfg.use_rslora,
        targets: cfg.target_modules.clone(),
    };
    // Check every module first so the user sees all problems at once.
    let mut problems = Vec::new();
    let mut found: HashMap<String, (Tensor, Tensor)> = HashMap::new();
    for p in model.projections_mut() {
        let (out, inp) = p.dims();
        let (ka, kb) = (peft_tensor_name(p.name(), 'A'), peft_tensor_name(p.name(), 'B'));
        match (tensors.get(&ka), tensors.get(&kb)) {
            (Some(a), Some(b)) => {
                if a.dims() != [cfg.r, inp] {
                    problems.push(format!("{ka}: shape {:?}, expected [{}, {inp}]", a.dims(), cfg.r));
                }
                if b.dims() != [out, cfg.r] {
                    problems.push(format!("{kb}: shape {:?}, expected [{out}, {}]", b.dims(), cfg.r));
                }
                found.insert(p.name().to_string(), (a.clone(), b.clone()));
            }
            (None, None) => {}
            _ => problems.push(format!("{}: only one of lora_A / lora_B is present", p.name())),
        }
    }
    let known: std::collections::HashSet<String> =
        found.keys().flat_map(|m| [peft_tensor_name(m, 'A'), peft_tensor_name(m, 'B')]).collect();
    for k in tensors.keys().filter(|k| !known.contains(*k)) {
        problems.push(format!("{k}: does not belong to any projection of this model"));
    }
    if found.is_empty() {
        problems.push("no LoRA tensors match this model's projections".into());
    }
    if !problems.is_empty() {
        return Err(GraftError::model(
            &weights_path,
            format!("adapter does not fit the model:\n  {}", problems.join("\n  ")),
        ));
    }
    let dtype = model.weights_dtype();
    let names: Vec<String> = found.keys().cloned().collect();
    let spec_exact = LoraSpec { targets: names.iter().map(|n| n.to_string()).collect(), ..spec.clone() };
    let mut set = lora::attach_with(model, &spec_exact, |name, _, clock| {
        let (a, b) = &found[name];
        LoraLayer::from_tensors(name, &a.to_dtype(dtype)?, &b.to_dtype(dtype)?, spec.scale(), spec.dropout, clock)
    })?;
    set.spec = spec;
    Ok(set)
}

/// Checks that the adapter at `dir` was trained on the model it is attached to: the student its
/// [`STUDENT_FILE`] names, or (without the file) a model that is not a student. Layer numbers
/// alone cannot tell: a 15-block student's adapter fits blocks 0..14 of the whole model.
fn check_student(dir: &Path, model: &Llama) -> Result<()> {
    let path = dir.join(STUDENT_FILE);
    let trained_on: Option<StudentLineage> = if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|e| GraftError::io(&path, e))?;
        Some(serde_json::from_str(&text).map_err(|e| GraftError::model(&path, format!("invalid: {e}")))?)
    } else {
        None
    };
    if trained_on.as_ref() == model.lineage() {
        return Ok(());
    }
    let describe = |l: Option<&StudentLineage>| match l {
        Some(l) => format!(
            "a student of blocks {:?} of a {}-block model (model.keep_layers)",
            l.kept_layers, l.teacher_num_hidden_layers
        ),
        None => "a whole model, not a student".to_string(),
    };
    Err(GraftError::model(
        dir,
        format!(
            "the adapter was trained on {}, but the model here is {}: load the model the run trained (the same \
             model.keep_layers), or export the run's merged model",
            describe(trained_on.as_ref()),
            describe(model.lineage())
        ),
    ))
}

/// Checks that every plain module name in `target_modules` names projections this model has
/// (a regex string, `all-linear` or a `*` pattern is left to the tensor check).
fn check_target_modules<M: Adaptable + ?Sized>(cfg: &PeftLoraConfig, cfg_path: &Path, model: &mut M) -> Result<()> {
    let names: Vec<String> = model.projections_mut().iter().map(|p| p.name().to_string()).collect();
    let plain = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    let missing: Vec<&String> = cfg
        .target_modules
        .iter()
        .filter(|t| plain(t) && !names.iter().any(|n| crate::adapters::targets::matches(t, n)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let example = names.first().map(String::as_str).unwrap_or("<none>");
    Err(GraftError::model(
        cfg_path,
        format!(
            "target_modules {missing:?} match none of this model's {} projections (they are named like `{example}`): the adapter was made for another architecture",
            names.len()
        ),
    ))
}
