//! llama.cpp's LoRA adapter GGUF: a GGUF file of `A`/`B` pairs that `llama-cli --lora`,
//! `llama-server` and Ollama's `ADAPTER` apply on top of a base GGUF at run time.
//!
//! The convention (what llama.cpp's `convert_lora_to_gguf.py` writes and `llama-adapter.cpp`
//! accepts):
//!
//! - metadata: `general.architecture` = the base model's (`llama`), `general.type` = `adapter`,
//!   `adapter.type` = `lora`, `adapter.lora.alpha` (f32);
//! - tensors named after the base GGUF tensor they adapt plus `.lora_a` / `.lora_b`
//!   (`blk.0.attn_q.weight.lora_a`); `lora_a` is `[r, n_in]` and `lora_b` `[n_out, r]` in
//!   candle's (and PyTorch's) outermost-first order, i.e. `ne = [n_in, r]` and `ne = [r, n_out]`
//!   in ggml's order — what llama.cpp checks (`ne[0]` of `A` equals the base's `ne[0]`, `ne[1]`
//!   of `B` the base's `ne[1]`);
//! - llama.cpp applies `y += (alpha / r) · B (A x)` with `r` read from the tensors (`alpha` = 0
//!   means a scale of 1). graft writes `alpha = s · r` for the adapter's scale `s`, which is α
//!   for plain LoRA and α·√r for rsLoRA, so every runtime computes graft's update;
//! - the rows of `attn_q` / `attn_k` base weights are permuted for llama.cpp's RoPE, so the rows
//!   of their `B` are permuted the same way (`B` produces the output rows); `A` is not.
//!
//! [`write_gguf_lora`] writes the file, [`check_gguf_lora`] verifies one against the adapter it
//! came from, [`load_gguf_lora`] attaches one to a model (un-permuting `B` back to graft's
//! Hugging Face row order).

use crate::adapters::lora::{self, LoraLayer, LoraSet, LoraSpec};
use crate::io::gguf::{GgufFile, GgufWriter};
use crate::models::llama::weights::{hf_to_gguf_name, permute_rows_gguf_to_hf, permute_rows_hf_to_gguf};
use crate::models::llama::{Llama, LlamaConfig};
use crate::models::Model;
use crate::{GraftError, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Suffix of the down-projection `A` tensors.
pub const LORA_A_SUFFIX: &str = ".lora_a";
/// Suffix of the up-projection `B` tensors.
pub const LORA_B_SUFFIX: &str = ".lora_b";
/// Metadata key of the scaling numerator.
pub const ALPHA_KEY: &str = "adapter.lora.alpha";

/// The GGUF name of the base weight a graft projection adapts:
/// `layers.0.self_attn.q_proj` → `blk.0.attn_q.weight`, `lm_head` → `output.weight`.
pub fn gguf_base_name(module: &str) -> Option<String> {
    let hf = if module == "lm_head" { "lm_head.weight".to_string() } else { format!("model.{module}.weight") };
    hf_to_gguf_name(&hf)
}

/// How many heads llama.cpp permuted the rows of `module`'s base weight for (q and k
/// projections of a Llama), or `None` when its rows are in the same order in both layouts.
fn permuted_heads(module: &str, cfg: &LlamaConfig) -> Option<usize> {
    if cfg.family != crate::models::llama::Family::Llama {
        None
    } else if module.ends_with("self_attn.q_proj") {
        Some(cfg.num_attention_heads)
    } else if module.ends_with("self_attn.k_proj") {
        Some(cfg.num_key_value_heads)
    } else {
        None
    }
}

/// The ggml `general.file_type` code of an all-`dtype` file (as llama.cpp's converter records it).
fn file_type(dtype: GgmlDType) -> u32 {
    match dtype {
        GgmlDType::F16 => 1,
        _ => 0,
    }
}

/// Writes `set` as a llama.cpp LoRA adapter GGUF at `out` (atomically). `cfg` gives the head
/// counts for the q/k row permutation, `architecture` the base GGUF's `general.architecture`;
/// `dtype` is F32 or F16. Every layer of the set must share one rank and one scale (llama.cpp
/// keeps one alpha per file).
pub fn write_gguf_lora(
    set: &LoraSet,
    cfg: &LlamaConfig,
    architecture: &str,
    out: &Path,
    dtype: GgmlDType,
) -> Result<()> {
    if !matches!(dtype, GgmlDType::F32 | GgmlDType::F16) {
        return Err(GraftError::Input(format!("a GGUF LoRA adapter is stored as f32 or f16, not {dtype:?}")));
    }
    cfg.require_llama("a GGUF LoRA adapter")?;
    let first = set.layers.first().ok_or_else(|| GraftError::Input("the adapter has no layers to export".into()))?;
    let rank = first.a().dims()[0];
    let scale = first.scale();
    if let Some(odd) = set.layers.iter().find(|l| l.a().dims()[0] != rank || l.scale() != scale) {
        return Err(GraftError::Input(format!(
            "{}: rank {} and scale {} differ from {}'s ({rank}, {scale}); a GGUF LoRA file holds one alpha for every layer",
            odd.name(),
            odd.a().dims()[0],
            odd.scale(),
            first.name()
        )));
    }
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String(architecture.into()))?;
    w.add_metadata("general.type", Value::String("adapter".into()))?;
    w.add_metadata("general.file_type", Value::U32(file_type(dtype)))?;
    w.add_metadata("adapter.type", Value::String("lora".into()))?;
    // llama.cpp scales by alpha / r: this alpha reproduces graft's scale (α/r, or α/√r for rsLoRA).
    w.add_metadata(ALPHA_KEY, Value::F32((scale * rank as f64) as f32))?;
    for layer in &set.layers {
        let base = gguf_base_name(layer.name()).ok_or_else(|| {
            GraftError::Input(format!("{}: no llama.cpp tensor name for this projection", layer.name()))
        })?;
        let a = layer.a().as_tensor().to_dtype(DType::F32)?;
        let b = layer.b().as_tensor().to_dtype(DType::F32)?;
        let b = match permuted_heads(layer.name(), cfg) {
            Some(heads) => permute_rows_hf_to_gguf(&b, heads)?,
            None => b,
        };
        w.add_tensor(&format!("{base}{LORA_A_SUFFIX}"), &a, dtype)?;
        w.add_tensor(&format!("{base}{LORA_B_SUFFIX}"), &b, dtype)?;
    }
    w.write(out)?;
    Ok(())
}

/// Verifies a written adapter file against the adapter it was written from: the metadata
/// llama.cpp requires, every expected tensor present with llama.cpp's shape, and nothing else.
/// Lists every problem found.
pub fn check_gguf_lora(path: &Path, set: &LoraSet, architecture: &str) -> Result<()> {
    let gguf = GgufFile::open(path)?;
    let mut problems = Vec::new();
    for (key, want) in [("general.architecture", architecture), ("general.type", "adapter"), ("adapter.type", "lora")] {
        match gguf.meta_str(key) {
            Ok(v) if v == want => {}
            Ok(v) => problems.push(format!("{key} is `{v}`, expected `{want}`")),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if let Err(e) = gguf.meta_f32(ALPHA_KEY) {
        problems.push(e.to_string());
    }
    let mut expected = BTreeSet::new();
    for layer in &set.layers {
        let Some(base) = gguf_base_name(layer.name()) else {
            problems.push(format!("{}: no llama.cpp tensor name", layer.name()));
            continue;
        };
        let (r, n_in) = layer.a().dims2()?;
        let (n_out, _) = layer.b().dims2()?;
        for (suffix, want) in [(LORA_A_SUFFIX, [r, n_in]), (LORA_B_SUFFIX, [n_out, r])] {
            let name = format!("{base}{suffix}");
            match gguf.header().tensor(&name) {
                None => problems.push(format!("tensor `{name}` is missing")),
                Some(t) if t.dims != want => problems.push(format!(
                    "tensor `{name}` has shape {:?} (ggml ne {:?}), expected {want:?}",
                    t.dims,
                    t.dims.iter().rev().collect::<Vec<_>>()
                )),
                Some(_) => {}
            }
            expected.insert(name);
        }
    }
    problems.extend(gguf.tensor_names().filter(|n| !expected.contains(*n)).map(|n| format!("unexpected tensor `{n}`")));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(GraftError::model(
            path,
            format!("the GGUF LoRA file does not match its adapter:\n  {}", problems.join("\n  ")),
        ))
    }
}

/// Reads a llama.cpp LoRA adapter GGUF and attaches it to `model` without merging. The
/// metadata and every tensor are checked against the model first, and all problems are listed:
/// a file for another architecture, an unknown tensor, a missing half of a pair, a shape that
/// does not fit the projection or a rank that differs between layers.
pub fn load_gguf_lora(path: &Path, model: &mut Llama) -> Result<LoraSet> {
    let gguf = GgufFile::open(path)?;
    let fail = |reason: String| GraftError::model(path, reason);
    let general_type = gguf.meta_str("general.type").unwrap_or("");
    let adapter_type = gguf.meta_str("adapter.type").unwrap_or("");
    if general_type != "adapter" || adapter_type != "lora" {
        return Err(fail(format!(
            "not a LoRA adapter GGUF (general.type `{general_type}`, adapter.type `{adapter_type}`; expected `adapter` and `lora`): pass a base model with --model and its adapter with --adapter"
        )));
    }
    let arch = gguf.meta_str("general.architecture")?;
    if arch != model.info().architecture {
        return Err(fail(format!("adapter for architecture `{arch}`, the model is `{}`", model.info().architecture)));
    }
    let alpha = match gguf.metadata().get(ALPHA_KEY) {
        None => 0.0,
        Some(_) => f64::from(gguf.meta_f32(ALPHA_KEY)?),
    };
    let cfg = model.config().clone();
    let device = model.device().clone();
    let dtype = model.dtype();

    let mut problems = Vec::new();
    let mut pairs: HashMap<String, (Tensor, Tensor)> = HashMap::new();
    let mut known = BTreeSet::new();
    let mut rank: Option<usize> = None;
    for p in model.projections_mut() {
        let Some(base) = gguf_base_name(p.name()) else { continue };
        let (out, inp) = p.dims();
        let (na, nb) = (format!("{base}{LORA_A_SUFFIX}"), format!("{base}{LORA_B_SUFFIX}"));
        let (ta, tb) = (gguf.header().tensor(&na), gguf.header().tensor(&nb));
        known.insert(na.clone());
        known.insert(nb.clone());
        let (Some(ta), Some(tb)) = (ta, tb) else {
            if ta.is_some() || tb.is_some() {
                problems.push(format!("{base}: only one of lora_a / lora_b is present"));
            }
            continue;
        };
        let r = ta.dims.first().copied().unwrap_or(0);
        let mut fits = true;
        if ta.dims != [r, inp] {
            problems.push(format!("tensor `{na}`: shape {:?}, expected [r, {inp}]", ta.dims));
            fits = false;
        }
        if tb.dims != [out, r] {
            problems.push(format!("tensor `{nb}`: shape {:?}, expected [{out}, {r}]", tb.dims));
            fits = false;
        }
        match rank {
            Some(r0) if r0 != r => {
                problems
                    .push(format!("{base}: rank {r}, other layers have rank {r0} (graft needs one rank per adapter)"));
                fits = false;
            }
            _ => rank = Some(r),
        }
        if fits && r > 0 {
            let a = gguf.dequantize(&na, DType::F32, &device)?;
            let b = gguf.dequantize(&nb, DType::F32, &device)?;
            let b = match permuted_heads(p.name(), &cfg) {
                Some(heads) => permute_rows_gguf_to_hf(&b, heads)?,
                None => b,
            };
            pairs.insert(p.name().to_string(), (a.to_dtype(dtype)?, b.to_dtype(dtype)?));
        }
    }
    problems.extend(
        gguf.tensor_names()
            .filter(|n| !known.contains(*n))
            .map(|n| format!("tensor `{n}` does not adapt any projection of this model")),
    );
    if pairs.is_empty() && problems.is_empty() {
        problems.push("no LoRA tensors match this model's projections".into());
    }
    if !problems.is_empty() {
        return Err(fail(format!("adapter does not fit the model:\n  {}", problems.join("\n  "))));
    }
    let r = rank.unwrap_or(1);
    // alpha = 0 is llama.cpp's "no scaling" (a scale of 1).
    let alpha = if alpha == 0.0 { r as f64 } else { alpha };
    let mut names: Vec<String> = pairs.keys().cloned().collect();
    names.sort();
    let spec = LoraSpec { r, alpha, dropout: 0.0, rslora: false, targets: names };
    lora::attach_with(model, &spec, |name, _, clock| {
        let (a, b) = &pairs[name];
        LoraLayer::from_tensors(name, a, b, spec.scale(), 0.0, clock)
    })
}
