//! Exporting a finished run: the PEFT adapter, a merged Hugging Face folder, a merged GGUF, or a
//! llama.cpp LoRA adapter GGUF. Every export is read back and compared on a fixed prompt with
//! what it should hold — the trained model, or for a merged GGUF the trained weights rounded to
//! its tensor type (see [`super::export_check`]); a mismatch fails loudly instead of leaving a
//! silently broken file. Beside each GGUF export an Ollama `Modelfile` is written.

use super::export_check::{self, gguf_tensor_type, logits, mismatch, ExportCheck, LogitAgreement, MERGE_TOLERANCE};
use crate::assets::{resolve_model, ModelSource};
use crate::config::TrainConfig;
use crate::io::gguf::{GgufFile, GgufWriter};
use crate::io::gguf_lora;
use crate::io::modelfile::Modelfile;
use crate::models::llama::weights::{hf_to_gguf_name, permute_rows_hf_to_gguf};
use crate::models::llama::StudentLineage;
use crate::models::llama::{Llama, LoadOptions};
use crate::models::load::{load_causal_lm, load_causal_lm_keeping};
use crate::tokenizer::Tokenizer;
use crate::{GraftError, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Tensor};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// PEFT adapter folder (adapter_config.json + adapter_model.safetensors).
    Peft,
    /// Merged model as a Hugging Face folder.
    Merged,
    /// Merged model as a GGUF file.
    Gguf,
    /// The LoRA adapter as a llama.cpp adapter GGUF, applied on top of the base GGUF at run time.
    GgufLora,
}

impl ExportFormat {
    /// Every format with its command-line name.
    pub const ALL: [(&'static str, ExportFormat); 4] = [
        ("peft", ExportFormat::Peft),
        ("merged", ExportFormat::Merged),
        ("gguf", ExportFormat::Gguf),
        ("gguf-lora", ExportFormat::GgufLora),
    ];

    /// The format called `name` on the command line (`peft`, `merged`, `gguf`, `gguf-lora`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }
}

/// Result of an export and its read-back check.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// What was written.
    pub path: PathBuf,
    /// Largest |logit difference| between the export and the training-time model on the check
    /// prompt. For f16 and q8_0 GGUF exports this is the rounding's effect, reported, not bounded.
    pub max_abs_logit_diff: f32,
    /// Whether the most likely next token agrees with the training-time model's at every
    /// position of the check prompt.
    pub argmax_agrees: bool,
    /// Share of the check prompt's positions where the most likely next token is the
    /// training-time model's.
    pub top1_agreement: f64,
    /// The pass/fail check: what the export was compared with, the difference and the bound.
    pub check: ExportCheck,
    /// The Ollama Modelfile written beside a GGUF export.
    pub modelfile: Option<PathBuf>,
}

/// The model of a run as trained (base + adapter, or the fully fine-tuned weights).
pub fn load_trained(run_dir: &Path) -> Result<(TrainConfig, ModelSource, Llama, Tokenizer)> {
    let cfg_path = run_dir.join("config.resolved.toml");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| GraftError::io(&cfg_path, e))?;
    let cfg: TrainConfig =
        toml::from_str(&text).map_err(|e| GraftError::Input(format!("{}: {e}", cfg_path.display())))?;
    let source = resolve_model(&cfg.model.name, false)?;
    let tok = Tokenizer::from_source(&source)?;
    let adapter = run_dir.join("adapter");
    let full = run_dir.join("model");
    let model = if adapter.join("adapter_config.json").is_file() {
        let mut m = load_causal_lm_keeping(&source, &LoadOptions::default(), cfg.model.keep_layers.as_ref())?;
        if crate::io::peft_prompt::is_prompt_adapter(&adapter) {
            crate::io::peft_prompt::load_prompt(&adapter, &mut m)?;
        } else {
            crate::io::peft::load_lora(&adapter, &mut m)?;
        }
        m
    } else if full.join("config.json").is_file() {
        load_causal_lm(&ModelSource::HfFolder(full), &LoadOptions::default())?
    } else {
        return Err(GraftError::Input(format!("{} has no adapter/ or model/: did the run finish?", run_dir.display())));
    };
    Ok((cfg, source, model, tok))
}

fn check_prompt(tok: &Tokenizer) -> Result<Vec<u32>> {
    Ok(tok.encode(export_check::CHECK_PROMPT, false)?)
}

/// The check of an export compared with the trained model itself.
fn against_trained(trained: &Tensor, exported: &Tensor, out: &Path, tolerance: f32) -> Result<ExportCheck> {
    let reference = "the trained model";
    let got = LogitAgreement::of(trained, exported)?;
    if !got.within(tolerance) {
        return Err(mismatch(out.display(), reference, &got, tolerance));
    }
    Ok(ExportCheck {
        reference: reference.into(),
        max_abs_logit_diff: got.max_abs_diff,
        tolerance,
        max_abs_weight_diff: None,
    })
}

/// Exports `run_dir` as `format` to `out`, then verifies the export. `gguf_type` picks the
/// tensor type of a GGUF export (F32, F16 or Q8_0; F32 or F16 for `GgufLora`). GGUF exports get
/// an Ollama `Modelfile` in the same folder.
pub fn export(run_dir: &Path, format: ExportFormat, out: &Path, gguf_type: GgmlDType) -> Result<ExportReport> {
    let (cfg, source, trained, tok) = load_trained(run_dir)?;
    if format != ExportFormat::Peft {
        trained.config().require_llama(&format!("a `{format:?}` export"))?;
    }
    if trained.virtual_tokens().is_some() {
        // A soft prompt or prefix cannot be folded into the weights; its adapter folder is
        // already the PEFT export.
        return Err(GraftError::Input(format!(
            "{}: prompt / prefix tuning adapters cannot be exported; use {} (PEFT format) as is",
            run_dir.display(),
            run_dir.join("adapter").display()
        )));
    }
    if let (Some(lineage), ExportFormat::Peft | ExportFormat::GgufLora) = (trained.lineage(), format) {
        // The adapter's layer numbers are the student's; on the whole model they would silently
        // land on other blocks.
        return Err(GraftError::Input(format!(
            "{}: the run trained a student of {} of the {} blocks of {} (model.keep_layers), and its adapter \
             fits only that student: export the whole model with --format merged or --format gguf",
            run_dir.display(),
            lineage.kept_layers.len(),
            lineage.teacher_num_hidden_layers,
            cfg.model.name
        )));
    }
    let ids = check_prompt(&tok)?;
    let trained_logits = logits(&trained, &ids)?;
    if matches!(format, ExportFormat::Gguf | ExportFormat::GgufLora) {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| GraftError::io(parent, e))?;
        }
    }
    let (exported, check) = match format {
        ExportFormat::Peft => {
            let src = run_dir.join("adapter");
            let mut model = load_causal_lm(&source, &LoadOptions::default())?;
            let set = crate::io::peft::load_lora(&src, &mut model)?;
            crate::io::peft::save_lora(&set, out, &cfg.model.name)?;
            let mut back = load_causal_lm(&source, &LoadOptions::default())?;
            crate::io::peft::load_lora(out, &mut back)?;
            let exported = logits(&back, &ids)?;
            let check = against_trained(&trained_logits, &exported, out, 0.0)?;
            (exported, check)
        }
        ExportFormat::Merged => {
            let mut merged = trained.clone();
            crate::adapters::lora::merge(&mut merged)?;
            crate::io::hf_folder::write_llama_folder(&merged, &tok, out, DType::F32)?;
            drop(merged);
            let back = load_causal_lm(&ModelSource::HfFolder(out.to_path_buf()), &LoadOptions::default())?;
            let exported = logits(&back, &ids)?;
            let check = against_trained(&trained_logits, &exported, out, MERGE_TOLERANCE)?;
            (exported, check)
        }
        ExportFormat::Gguf => {
            let ModelSource::Gguf(base_path) = &source else {
                return Err(GraftError::Input(
                    "GGUF export needs a GGUF base model (for its tokenizer metadata)".into(),
                ));
            };
            let mut merged = trained.clone();
            crate::adapters::lora::merge(&mut merged)?;
            // Merging is exact up to summation order; the file is then held against the merged
            // weights rounded to its type.
            let merge = LogitAgreement::of(&trained_logits, &logits(&merged, &ids)?)?;
            if !merge.within(MERGE_TOLERANCE) {
                return Err(mismatch(
                    "the model with its adapter merged",
                    "the trained model",
                    &merge,
                    MERGE_TOLERANCE,
                ));
            }
            write_gguf(&merged, &GgufFile::open(base_path)?, out, gguf_type)?;
            export_check::check_gguf(&merged, out, gguf_type, &ids)?
        }
        ExportFormat::GgufLora => {
            let ModelSource::Gguf(base_path) = &source else {
                return Err(GraftError::Input("a GGUF LoRA adapter needs a GGUF base model to apply to".into()));
            };
            let adapter = run_dir.join("adapter");
            if !adapter.join("adapter_config.json").is_file() {
                return Err(GraftError::Input(format!(
                    "{} trained every weight and has no LoRA adapter: export it with --format gguf",
                    run_dir.display()
                )));
            }
            let mut model = load_causal_lm(&source, &LoadOptions::default())?;
            let set = crate::io::peft::load_lora(&adapter, &mut model)?;
            let arch = GgufFile::open(base_path)?.meta_str("general.architecture")?.to_string();
            gguf_lora::write_gguf_lora(&set, model.config(), &arch, out, gguf_type)?;
            gguf_lora::check_gguf_lora(out, &set, &arch)?;
            let mut back = load_causal_lm(&source, &LoadOptions::default())?;
            gguf_lora::load_gguf_lora(out, &mut back)?;
            let exported = logits(&back, &ids)?;
            let tolerance = if gguf_type == GgmlDType::F32 { 1e-4 } else { 1e-2 };
            let check = against_trained(&trained_logits, &exported, out, tolerance)?;
            (exported, check)
        }
    };
    let vs_trained = LogitAgreement::of(&trained_logits, &exported)?;
    let modelfile = match format {
        ExportFormat::Gguf | ExportFormat::GgufLora => Some(write_modelfile(format, &source, &tok, out)?),
        ExportFormat::Peft | ExportFormat::Merged => None,
    };
    Ok(ExportReport {
        path: out.to_path_buf(),
        max_abs_logit_diff: vs_trained.max_abs_diff,
        argmax_agrees: vs_trained.top1_agreement == 1.0,
        top1_agreement: vs_trained.top1_agreement,
        check,
        modelfile,
    })
}

/// Writes `Modelfile` beside the GGUF `out`: `FROM` the merged model, or for an adapter `FROM`
/// the base GGUF's file name (a placeholder the user points at their copy) plus `ADAPTER`.
fn write_modelfile(format: ExportFormat, source: &ModelSource, tok: &Tokenizer, out: &Path) -> Result<PathBuf> {
    let file = |p: &Path| -> Result<String> {
        p.file_name()
            .map(|n| format!("./{}", n.to_string_lossy()))
            .ok_or_else(|| GraftError::Input(format!("{} is not a file path", p.display())))
    };
    let template = tok.chat_template();
    let mf = if format == ExportFormat::GgufLora {
        let ModelSource::Gguf(base) = source else {
            return Err(GraftError::Input("a GGUF LoRA adapter needs a GGUF base model".into()));
        };
        let mut mf = Modelfile::new(file(base)?, Some(file(out)?), template.as_ref(), tok.eos_token());
        let name = base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        mf.comments.insert(
            0,
            format!(
                "FROM is the base model the adapter was trained on: put {name} beside this file or change the path."
            ),
        );
        mf
    } else {
        Modelfile::new(file(out)?, None, template.as_ref(), tok.eos_token())
    };
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let path = dir.join("Modelfile");
    mf.write(&path)?;
    Ok(path)
}

/// Writes `model` as a GGUF with `base`'s metadata (tokenizer, chat template, hyperparameters),
/// tensors renamed to llama.cpp's names and q/k rows permuted back to its layout. The block count
/// and the student lineage (`graft.student.*`) are the model's own, so a student built with
/// `model.keep_layers` exports as a model of its own depth.
pub fn write_gguf(model: &Llama, base: &GgufFile, out: &Path, dtype: GgmlDType) -> Result<()> {
    model.config().require_llama("a GGUF export")?;
    let mut w = GgufWriter::new();
    let mut keys: Vec<&String> = base.metadata().keys().collect();
    keys.sort();
    for k in keys {
        w.add_metadata(k.clone(), base.metadata()[k].clone())?;
    }
    let cfg = model.config();
    let arch = base.meta_str("general.architecture")?;
    w.set_metadata(format!("{arch}.block_count"), Value::U32(cfg.num_hidden_layers as u32))?;
    w.remove_metadata(StudentLineage::GGUF_TEACHER_BLOCKS);
    w.remove_metadata(StudentLineage::GGUF_KEPT_BLOCKS);
    for (key, value) in model.lineage().map(StudentLineage::gguf_metadata).unwrap_or_default() {
        w.add_metadata(key, value)?;
    }
    for (name, t) in model.named_tensors()? {
        let gname = hf_to_gguf_name(&name).ok_or_else(|| GraftError::Input(format!("no GGUF name for {name}")))?;
        let t = t.to_dtype(DType::F32)?;
        let t = if name.ends_with("q_proj.weight") {
            permute_rows_hf_to_gguf(&t, cfg.num_attention_heads)?
        } else if name.ends_with("k_proj.weight") {
            permute_rows_hf_to_gguf(&t, cfg.num_key_value_heads)?
        } else {
            t
        };
        w.add_tensor(&gname, &t, gguf_tensor_type(t.rank(), dtype))?;
    }
    w.write(out)?;
    Ok(())
}
